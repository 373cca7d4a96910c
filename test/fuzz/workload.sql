--
-- test/fuzz/workload.sql: the workload whose pgoutput messages make the
-- fuzz corpus (test/fuzz/corpus.hex, written by test/fuzz/capture.sh).
-- Every message type pgoutput v1 sends: BEGIN, COMMIT, ORIGIN, RELATION,
-- TYPE, INSERT, UPDATE (with and without old key, old full row, unchanged
-- TOAST), DELETE (key and full), TRUNCATE (cascade, restart identity) and
-- MESSAGE (transactional and not), over many column types.
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';

CREATE TYPE fz_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE fz_pair AS (a int, b text);
CREATE DOMAIN fz_posint AS int CHECK (VALUE > 0);
CREATE TYPE fz_floatrange AS RANGE (subtype = float8);

CREATE TABLE fz_types (
    id int PRIMARY KEY,
    i2 int2, i8 int8, num numeric, f4 float4, f8 float8, mon money,
    b bool, bt bit(5), vb varbit, t text, vc varchar(10), ch char(3),
    by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
    iv interval, u uuid, ip inet, cidr_ cidr, mac macaddr, mac8 macaddr8,
    pt point, ln line, ls lseg, bx box, pth path, pg polygon, ci circle,
    tsv tsvector, tsq tsquery, js json, jsb jsonb, r int4range,
    tr tstzrange, mr int4multirange, arr int[], arr2 text[][], mood fz_mood,
    pair fz_pair, pos fz_posint, fr fz_floatrange, x xml);

CREATE TABLE fz_toast (id int PRIMARY KEY, v text, big text);
ALTER TABLE fz_toast ALTER big SET STORAGE EXTERNAL;
CREATE TABLE fz_full (id int, v text, big text);
ALTER TABLE fz_full REPLICA IDENTITY FULL;
CREATE TABLE fz_idx (a int NOT NULL, b text NOT NULL, c text);
CREATE UNIQUE INDEX fz_idx_ab ON fz_idx (a, b);
ALTER TABLE fz_idx REPLICA IDENTITY USING INDEX fz_idx_ab;
CREATE TABLE fz_parent (id int PRIMARY KEY);
CREATE TABLE fz_child (id serial PRIMARY KEY, p int REFERENCES fz_parent);
CREATE TABLE "fz Quoted ""Name"" é" ("col ""q""" int PRIMARY KEY, "ü" text);
CREATE TABLE fz_long_name_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    (id_long_column_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb int PRIMARY KEY);

CREATE PUBLICATION fuzz_pub FOR ALL TABLES;
SELECT 'init' FROM pg_create_logical_replication_slot('fuzz_slot', 'pgoutput');

INSERT INTO fz_types VALUES (
    1, -32768, 9223372036854775807, '-123456789.000000001', 'NaN', '-Infinity', '$1,234.56',
    true, B'10101', B'1', 'it''s "q" \ é ✓', 'short', 'ab', '\x00ff10',
    'infinity', '24:00', '12:34:56.789+05:30', '-infinity', '2024-02-29 23:59:59.999999+00',
    '1 year 2 mons -3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
    '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]',
    '((0,0),(1,1),(1,0))', '<(0,0),2>', 'a fat cat:2A sat', 'fat & (rat | !cat)',
    '{"a": [1, 2.5e3, null, "x"]}', '{"b": {"c": true}}', '[1,10)',
    '[2024-01-01 00:00+00,infinity)', '{[1,3),[5,7)}', '{1,NULL,-3}',
    '{{"a","b"},{"c",NULL}}', 'happy', '(7,"seven, ""7""")', 42, '[1.5,2.5]',
    '<a href="x">t&amp;</a>');
INSERT INTO fz_types (id) VALUES (2);
INSERT INTO fz_types (id, t, arr, js) VALUES (3, '', '{}', 'null');
UPDATE fz_types SET t = 'updated', num = 'NaN' WHERE id = 1;
UPDATE fz_types SET id = 4 WHERE id = 3;
DELETE FROM fz_types WHERE id = 2;

INSERT INTO fz_toast VALUES (1, 'v', repeat('0123456789abcdef', 1000));
UPDATE fz_toast SET v = 'unchanged toast' WHERE id = 1;
UPDATE fz_toast SET big = 'small now' WHERE id = 1;
DELETE FROM fz_toast;

INSERT INTO fz_full VALUES (1, 'a', repeat('x', 5000)), (2, NULL, NULL);
UPDATE fz_full SET v = 'b' WHERE id = 1;
DELETE FROM fz_full WHERE id = 2;

INSERT INTO fz_idx VALUES (1, 'k', 'c');
UPDATE fz_idx SET c = 'd';
UPDATE fz_idx SET b = 'k2';
DELETE FROM fz_idx;

INSERT INTO "fz Quoted ""Name"" é" VALUES (1, 'ü ✓');
INSERT INTO fz_long_name_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa VALUES (1);

BEGIN;
INSERT INTO fz_parent VALUES (1), (2);
INSERT INTO fz_child (p) VALUES (1), (2);
SELECT 'm' FROM pg_logical_emit_message(true, 'fz_prefix', 'transactional content');
SELECT 'm' FROM pg_logical_emit_message(false, 'fz_nontx', '\x00010203ff'::bytea);
COMMIT;
SELECT 'm' FROM pg_logical_emit_message(false, '', '');
TRUNCATE fz_parent CASCADE;
TRUNCATE fz_child RESTART IDENTITY;
TRUNCATE fz_toast, fz_full, fz_idx;

-- A transaction with a replication origin: an ORIGIN message.
SELECT 'o' FROM pg_replication_origin_create('fz_origin');
SELECT 'o' FROM pg_replication_origin_session_setup('fz_origin');
BEGIN;
SELECT 'o' FROM pg_replication_origin_xact_setup('0/12345678', '2024-01-01 00:00:00+00');
INSERT INTO fz_parent VALUES (3);
COMMIT;
SELECT 'o' FROM pg_replication_origin_session_reset();
