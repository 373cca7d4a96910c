--
-- decode: pgrpl.decode() describes pgoutput messages taken from a real
-- slot, and rejects malformed ones with a clean error.
--
\set VERBOSITY terse
SET TimeZone = 'UTC';

CREATE TABLE dec_t (id int PRIMARY KEY, v text, big text);
ALTER TABLE dec_t ALTER big SET STORAGE EXTERNAL;
CREATE TYPE dec_mood AS ENUM ('sad', 'happy');
CREATE TABLE dec_full (id int, m dec_mood);
ALTER TABLE dec_full REPLICA IDENTITY FULL;
CREATE PUBLICATION dec_pub FOR TABLE dec_t, dec_full;
SELECT 'init' FROM pg_create_logical_replication_slot('dec_slot', 'pgoutput');

BEGIN;
INSERT INTO dec_t VALUES (1, 'it''s "q" \ é', repeat(md5('x'), 100)), (2, NULL, NULL);
UPDATE dec_t SET v = 'two' WHERE id = 2;
UPDATE dec_t SET id = 3 WHERE id = 2;
DELETE FROM dec_t WHERE id = 3;
SELECT 'msg' FROM pg_logical_emit_message(true, 'pfx', '\x00ff'::bytea);
COMMIT;
UPDATE dec_t SET v = 'one' WHERE id = 1;
INSERT INTO dec_full VALUES (1, 'happy');
UPDATE dec_full SET m = 'sad';
TRUNCATE dec_t, dec_full;

-- Everything but what varies between runs (LSNs, times, xids, oids).
CREATE TEMP TABLE dec_msgs AS
SELECT row_number() OVER () AS n, data
  FROM pg_logical_slot_peek_binary_changes('dec_slot', NULL, NULL,
       'proto_version', '1', 'publication_names', 'dec_pub', 'messages', 'true');
-- (Long values are cut to their first 32 characters, and the oids of
-- user types, which vary, are shown as "user".)
SELECT n, regexp_replace(regexp_replace((pgrpl.decode(data)
                          - ARRAY['final_lsn', 'commit_time', 'xid', 'commit_lsn',
                                  'end_lsn', 'lsn', 'relid', 'relids', 'type_oid'])::text,
                         '"([0-9a-f]{32})[0-9a-f]+"', '"\1..."', 'g'),
                         '"type_oid": [0-9]{5,}', '"type_oid": "user"', 'g') AS message
  FROM dec_msgs ORDER BY n;
-- Relation and type details that are stable.
SELECT n, jsonb_path_query_array(pgrpl.decode(data),
                                  '$.columns[*].type_oid ? (@ < 16384)') AS builtin_type_oids
  FROM dec_msgs WHERE get_byte(data, 0) = ascii('R') ORDER BY n;
SELECT pgrpl.decode(data) ->> 'name' AS type_name
  FROM dec_msgs WHERE get_byte(data, 0) = ascii('Y');
-- The change messages name the relation a RELATION message described.
SELECT bool_and((pgrpl.decode(c.data) -> 'relid') IN
                (SELECT pgrpl.decode(r.data) -> 'relid' FROM dec_msgs r
                  WHERE get_byte(r.data, 0) = ascii('R'))) AS relids_known
  FROM dec_msgs c WHERE get_byte(c.data, 0) IN (ascii('I'), ascii('U'), ascii('D'));

-- Malformed input: a clean ERROR every time.
SELECT pgrpl.decode('\x'::bytea);
SELECT pgrpl.decode('\x5a'::bytea);
SELECT pgrpl.decode('\x42'::bytea);
SELECT pgrpl.decode('\x4300'::bytea);
SELECT pgrpl.decode('\x49000000014e0001'::bytea);
SELECT pgrpl.decode('\x4900000001580001'::bytea);
SELECT pgrpl.decode('\x49000000014e00017400000005ab'::bytea);
SELECT pgrpl.decode('\x49000000014e0001747fffffff'::bytea);
SELECT pgrpl.decode('\x5400000002000000000001'::bytea);
SELECT pgrpl.decode('\x54ffffffff00'::bytea);
SELECT pgrpl.decode('\x4d01000000000000000070667800'::bytea);
SELECT pgrpl.decode('\x4d0100000000000000007066780000000004ab'::bytea);
SELECT pgrpl.decode('\x5200000001'::bytea);
SELECT pgrpl.decode(NULL) IS NULL AS null_in_null_out;
-- Every prefix of every real message fails cleanly (none is a message of
-- its own), and every real message decodes.
DO $$
DECLARE
    r record;
    ok int := 0;
    failed int := 0;
    decoded int := 0;
BEGIN
    FOR r IN SELECT data FROM dec_msgs LOOP
        PERFORM pgrpl.decode(r.data);
        decoded := decoded + 1;
        FOR i IN 0 .. length(r.data) - 1 LOOP
            BEGIN
                PERFORM pgrpl.decode(substring(r.data FROM 1 FOR i));
                ok := ok + 1;
            EXCEPTION WHEN protocol_violation THEN
                failed := failed + 1;
            END;
        END LOOP;
    END LOOP;
    RAISE NOTICE 'decoded %, truncated ones that decoded %, failed cleanly %',
        decoded, ok, failed > 0;
END $$;

SELECT pg_drop_replication_slot('dec_slot');
DROP PUBLICATION dec_pub;
