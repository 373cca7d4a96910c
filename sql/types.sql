--
-- types: a captured INSERT's "new" equals to_jsonb() of the row, computed
-- here with TimeZone UTC, for every kind of type; TOASTed values.
--
\set VERBOSITY terse
-- pg_regress runs the server's clients in America/Los_Angeles (PGTZ): the
-- primary's walsender sends timestamps with a -08/-07 offset; pgrpl
-- converts them in UTC.
SHOW TimeZone;

CREATE TYPE types_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN types_posint AS int CHECK (VALUE > 0);
CREATE TYPE types_pair AS (a int, b text);

CREATE TABLE types_t (
    id      int PRIMARY KEY,
    i2      int2,
    i4      int4,
    i8      int8,
    num     numeric,
    num_s   numeric(12,4),
    f4      float4,
    f8      float8,
    b       bool,
    t       text,
    vc      varchar(20),
    c       char(5),
    j       json,
    jb      jsonb,
    ia      int[],
    ta      text[],
    ia2     int[][],
    ba      bytea,
    ts      timestamp,
    tstz    timestamptz,
    d       date,
    tm      time,
    iv      interval,
    u       uuid,
    mood    types_mood,
    pos     types_posint,
    pair    types_pair,
    inet_v  inet,
    gone    int
);
-- A dropped column is neither published nor part of to_jsonb().
ALTER TABLE types_t DROP COLUMN gone;
CREATE PUBLICATION types_pub FOR TABLE types_t;
SELECT public.create_sub('types', ARRAY['types_pub']);

INSERT INTO types_t VALUES
 (1, 32767, 2147483647, 9223372036854775807,
  123456789012345678901234567890.123456789, 1.5, 1.1, 0.1, true,
  'plain', 'varchar', 'ab',
  '{"a": 1, "b": [true, null, "x"]}', '{"k": {"nested": [1, 2.50, "three"]}}',
  '{1,2,3}', '{"a","b c",NULL}', '{{1,2},{3,4}}', '\x00ff10',
  '2024-02-29 12:34:56.789', '2024-07-01 09:08:07.123456+02', '2024-12-31', '23:59:59.5',
  '1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  'happy', 42, ROW(7, 'seven'), '192.168.0.1/24'),
 (2, -32768, -2147483648, -9223372036854775808,
  'NaN', -0.0001, 'Infinity', '-Infinity', false,
  E'quote '' double " backslash \\ tab \t newline \n end', '', '',
  '[1, "two", {"three": 3}]', '"just a string"',
  '{}', '{"quote\"d","back\\\\slash","{braces}","comma,"}', '{{NULL,2},{3,NULL}}', '\x',
  '0001-01-01 00:00:00', '1999-12-31 23:59:59.999999-08', '1970-01-01', '00:00:00',
  '-1 days -00:00:01', '00000000-0000-0000-0000-000000000000',
  'sad', 1, ROW(NULL, NULL), '::1'),
 (3, 0, 0, 0,
  '0.000000000000000001', 0, 'NaN', 'NaN', NULL,
  'unicode: ü ß € 日本語 😀', 'ÀÉÎ', 'ñ',
  'null', 'null',
  '{-1}', '{""}', NULL, E'\\x5c27',
  'infinity', '-infinity', 'infinity', '12:00',
  '0', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
  'ok', NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, 1, 2, 3, 'Infinity', 99999999.9999, '1e30', '1.7976931348623157e308', true,
  repeat('x', 3000), 'x', 'x',
  '{"dup": 1, "dup": 2}', '{"b": 1, "a": 2}',
  '{1,NULL}', '{NULL}', '{{{1}}}', decode(repeat('ab', 100), 'hex'),
  '2000-01-01 00:00:00.000001', '2038-01-19 03:14:08+00', '2000-02-29', '00:00:00.000001',
  '1 mon -1 day', 'c0ffee00-0000-4000-8000-000000000001',
  'ok', 2147483647, ROW(-1, ''), '10.0.0.0/8'),
 (6, NULL, NULL, NULL, '-0.5', '-12.3400', '-0', '-1e-300', false,
  '', NULL, NULL, '{}', '[]', '{}', '{}', '{}', NULL,
  NULL, '2024-03-10 02:30:00 America/New_York', NULL, NULL, NULL, NULL,
  NULL, NULL, ROW(0, 'with "quotes", commas and \ backslash'), NULL);
SELECT public.wait_sub('types');

-- Compare in UTC, and with the output styles the walsender of a logical
-- replication connection always uses (pg_regress's database has
-- IntervalStyle postgres_verbose).
SET TimeZone = 'UTC';
SET IntervalStyle = 'postgres';
-- Every captured INSERT equals to_jsonb() of the row.
SELECT r.id, c.new = to_jsonb(r) AS same
  FROM pgrpl.changes('types') c
  JOIN types_t r ON r.id = (c.new->>'id')::int
 ORDER BY r.id;
SELECT count(*) AS inserts FROM pgrpl.changes('types') WHERE op = 'INSERT';
-- What differs, if anything (no rows expected).
SELECT r.id, k.key, k.value AS captured, to_jsonb(r)->k.key AS expected
  FROM pgrpl.changes('types') c
  JOIN types_t r ON r.id = (c.new->>'id')::int
  CROSS JOIN LATERAL jsonb_each(c.new) k
 WHERE k.value IS DISTINCT FROM to_jsonb(r)->k.key
 ORDER BY 1, 2;
-- The JSON types of the captured values (numbers stay numbers, NaN and
-- infinities are strings, arrays and composites are structured).
SELECT key, string_agg(DISTINCT jsonb_typeof(value), ', ' ORDER BY jsonb_typeof(value)) AS json_types
  FROM pgrpl.changes('types') c, jsonb_each(c.new)
 GROUP BY key ORDER BY key;
-- A few values, as captured.
SELECT (c.new->>'id')::int AS id, c.new->'num' AS num, c.new->'f4' AS f4,
       CASE WHEN length(c.new->>'f8') > 40
            THEN 'number of ' || length(c.new->>'f8') || ' characters'
            ELSE (c.new->'f8')::text END AS f8,
       c.new->'tstz' AS tstz, c.new->'ts' AS ts
  FROM pgrpl.changes('types') c ORDER BY 1;
SELECT (c.new->>'id')::int AS id, c.new->'t' AS t, c.new->'ba' AS ba, c.new->'pair' AS pair
  FROM pgrpl.changes('types') c WHERE c.new->>'id' IN ('1', '2', '3', '6') ORDER BY 1;
SELECT c.new->'j' AS j, c.new->'jb' AS jb, c.new->'ia2' AS ia2, c.new->'ta' AS ta
  FROM pgrpl.changes('types') c ORDER BY (c.new->>'id')::int;
RESET TimeZone;
RESET IntervalStyle;

-- ---- TOAST ------------------------------------------------------------------
-- A value over 1 MB stored out of line, uncompressed.
CREATE TABLE types_toast (id int PRIMARY KEY, big text, small int);
ALTER TABLE types_toast ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER PUBLICATION types_pub ADD TABLE types_toast;
-- (The walsender picks up the publication change for new transactions.)
INSERT INTO types_toast
SELECT 1, string_agg(md5(i::text), '' ORDER BY i), 0 FROM generate_series(1, 40000) i;
SELECT length(big) AS big_length, pg_column_size(big) AS stored_size FROM types_toast;
-- An update that leaves "big" alone: pgoutput sends it as unchanged, so it
-- is absent from "new" and named in "unchanged".
UPDATE types_toast SET small = small + 1;
-- An update of "big" itself, then one that leaves it alone again.
UPDATE types_toast SET big = big || 'x';
UPDATE types_toast SET small = small + 1;
DELETE FROM types_toast;
SELECT public.wait_sub('types');
WITH orig AS (SELECT string_agg(md5(i::text), '' ORDER BY i) AS v
                FROM generate_series(1, 40000) i)
SELECT dense_rank() OVER (ORDER BY c.commit_lsn) AS txn, seq, op, table_name, old,
       new - 'big' AS new_without_big, new ? 'big' AS has_big,
       length(new->>'big') AS big_length,
       new->>'big' = orig.v AS big_is_original,
       new->>'big' = orig.v || 'x' AS big_is_updated,
       unchanged
  FROM pgrpl.changes('types') c, orig
 WHERE c.table_name = 'types_toast'
 ORDER BY c.commit_lsn, seq;

SELECT name, state, last_error FROM pgrpl.stat_subscription;
SELECT pgrpl.drop_subscription('types');
DROP PUBLICATION types_pub;
DROP TABLE types_t, types_toast;
DROP TYPE types_pair;
DROP DOMAIN types_posint;
DROP TYPE types_mood;
