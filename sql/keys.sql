--
-- keys: the row lookup key (pgrpl.row_key_hash) the change log is indexed by,
-- row_history/table_as_of over numeric, bigint, composite and text keys,
-- and row objects whose jsonb key order differs from the column order.
--
\set VERBOSITY terse

-- One integral number is the number itself, so that rows with ascending
-- keys are indexed in order (the relation leads the index).  Equal numbers
-- are one key.
SELECT pgrpl.row_key_hash('{"id": 5}') = pgrpl.row_key_hash('{"id": 5.0}') AS same_number,
       pgrpl.row_key_hash('{"id": 5}') AS five,
       pgrpl.row_key_hash('{"id": 6}') - pgrpl.row_key_hash('{"id": 5}') AS step,
       pgrpl.row_key_hash('{"id": 0}') - pgrpl.row_key_hash('{"id": -1}') AS step_at_zero,
       pgrpl.row_key_hash('{"id": -9223372036854775808}') AS int8_min,
       pgrpl.row_key_hash('{"id": 9223372036854775806}') AS int8_max_less_one,
       pgrpl.row_key_hash('{"k": 5}') = pgrpl.row_key_hash('{"id": 5}') AS name_not_part;
-- Everything else is hashed: fractions, numbers beyond int8, other
-- types, several columns.
SELECT pgrpl.row_key_hash('{"id": 5.5}')
         NOT IN (pgrpl.row_key_hash('{"id": 5}'), pgrpl.row_key_hash('{"id": 6}')) AS fraction,
       pgrpl.row_key_hash('{"id": 9223372036854775808}') <> 0 AS beyond_range,
       pgrpl.row_key_hash('{"id": "5"}') <> pgrpl.row_key_hash('{"id": 5}') AS text_five,
       pgrpl.row_key_hash('{"a": 1, "b": 2}') <> pgrpl.row_key_hash('{"a": 1, "b": 3}') AS composite,
       pgrpl.row_key_hash('{"b": 2, "a": 1}') = pgrpl.row_key_hash('{"a": 1, "b": 2}') AS key_order,
       pgrpl.row_key_hash('{"id": 1e400}') IS NOT NULL AS huge,
       pgrpl.row_key_hash('[5]') IS NOT NULL AS not_an_object;
-- The 1.x function and its C symbol are gone from a 2.0 schema.
SELECT count(*) AS old_key_hash FROM pg_proc
 WHERE pronamespace = 'pgrpl'::regnamespace AND proname = 'key_hash';

CREATE TABLE k_num (id numeric PRIMARY KEY, v text);
CREATE TABLE k_big (id bigint PRIMARY KEY, v text);
CREATE TABLE k_two (a int, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE k_text (k text PRIMARY KEY, v text);
-- jsonb orders keys by length, then bytes: a, id, w, zz_long_name
CREATE TABLE k_order (id int PRIMARY KEY, zz_long_name text, a text, w int);
ALTER TABLE k_order ALTER zz_long_name SET STORAGE EXTERNAL, ALTER a SET STORAGE EXTERNAL;
CREATE PUBLICATION k_pub FOR TABLE k_num, k_big, k_two, k_text, k_order;
SELECT public.create_sub('k', ARRAY['k_pub']);

INSERT INTO k_num VALUES (5.0, 'a'), (7.5, 'b'), (-3, 'c'), (140737488355328, 'd');
INSERT INTO k_big VALUES (1, 'a'), (-1, 'b'), (9007199254740993, 'c'), (-9223372036854775808, 'd');
INSERT INTO k_two VALUES (1, 2, 'a'), (2, 1, 'b');
INSERT INTO k_text VALUES ('5', 'a'), ('x', 'b');
UPDATE k_num SET v = v || '2';
UPDATE k_big SET v = v || '2';
UPDATE k_two SET b = 3 WHERE a = 1;
UPDATE k_text SET v = v || '2';
DELETE FROM k_big WHERE id = -1;
INSERT INTO k_order SELECT 1, string_agg(md5(i::text), ''), string_agg(md5((-i)::text), ''), 1
  FROM generate_series(1, 200) i;
UPDATE k_order SET w = 2;
UPDATE k_order SET a = 'short';
SELECT public.wait_sub('k');
-- unchanged columns are named in column order
SELECT op, (SELECT array_agg(k) FROM jsonb_object_keys(new) k) AS keys, unchanged, length(new ->> 'a') AS a_length
  FROM pgrpl.changes('k', relation => 'k_order');

-- The worker's key_hash is the SQL function's, for every captured row.
SELECT count(*) AS rows_with_key,
       count(*) FILTER (WHERE c.key_hash IS DISTINCT FROM pgrpl.row_key_hash(c.row_key)) AS mismatches
  FROM pgrpl.change c JOIN pgrpl.relation r USING (rel_id)
 WHERE r.table_name LIKE 'k\_%' AND c.row_key IS NOT NULL;

SELECT op, new FROM pgrpl.row_history('k', 'k_num', '{"id": 5}');
SELECT op, new FROM pgrpl.row_history('k', 'k_num', '{"id": 7.50}');
SELECT op, new FROM pgrpl.row_history('k', 'k_num', '{"id": 140737488355328}');
SELECT op, new FROM pgrpl.row_history('k', 'k_big', '{"id": 9007199254740993}');
SELECT op, new FROM pgrpl.row_history('k', 'k_big', '{"id": -9223372036854775808}');
SELECT op, old, new FROM pgrpl.row_history('k', 'k_big', '{"id": -1}');
SELECT op, new FROM pgrpl.row_history('k', 'k_two', '{"b": 2, "a": 1}');
SELECT op, new FROM pgrpl.row_history('k', 'k_text', '{"k": "5"}');
-- a text key "5" is not the number 5
SELECT count(*) FROM pgrpl.row_history('k', 'k_text', '{"k": 5}');
SELECT count(*) FROM pgrpl.row_history('k', 'k_num', '{"id": 6}');

SELECT * FROM pgrpl.table_as_of('k', 'k_num') ORDER BY 1;
SELECT * FROM pgrpl.table_as_of('k', 'k_big') ORDER BY 1;
SELECT * FROM pgrpl.table_as_of('k', 'k_two') ORDER BY 1;

-- Large values of the log are lz4-compressed where the server has lz4.
SELECT count(*) FILTER (WHERE a.attcompression <> expected) AS unexpected
  FROM pg_attribute a,
       (SELECT CASE WHEN 'lz4' = ANY (enumvals) THEN 'l' ELSE '' END::"char" AS expected
          FROM pg_settings WHERE name = 'default_toast_compression') s
 WHERE a.attrelid = 'pgrpl.change'::regclass
   AND a.attname IN ('old', 'new', 'unchanged', 'message_content', 'row_key', 'old_key');

SELECT pgrpl.drop_subscription('k');
DROP PUBLICATION k_pub;
DROP TABLE k_num, k_big, k_two, k_text, k_order;
