--
-- query: the read functions over the change log -- the cursor
-- (changes with after_lsn, max_rows, relation), transactions(),
-- row_history(), table_as_of() by LSN and by time, purge() -- and their
-- errors.  LSNs are never printed: positions are taken into psql variables.
--
\set VERBOSITY terse
SET TimeZone = 'UTC';

CREATE TABLE q_acc (id int PRIMARY KEY, owner text, balance numeric, doc text);
ALTER TABLE q_acc ALTER doc SET STORAGE EXTERNAL;
CREATE TABLE "Q Other" (k text PRIMARY KEY, v int);
CREATE TABLE q_full (a int, b text);
ALTER TABLE q_full REPLICA IDENTITY FULL;
CREATE TABLE q_nokey (a int);
CREATE PUBLICATION q_pub FOR TABLE q_acc, "Q Other", q_full;
CREATE PUBLICATION q_pub_ins FOR TABLE q_nokey WITH (publish = 'insert, truncate');
SELECT public.create_sub('q', ARRAY['q_pub', 'q_pub_ins']);

-- A TOASTed value (over 2 kB, not compressible, stored out of line).
CREATE FUNCTION q_big(n int) RETURNS text LANGUAGE sql AS
$$ SELECT string_agg(md5(i::text || n::text), '') FROM generate_series(1, 200) i $$;

-- T1: three rows and a row of the other table.
BEGIN;
INSERT INTO q_acc VALUES (1, 'alice', 100, q_big(1)), (2, 'bob', 50, NULL), (3, 'carol', 75, 'short');
INSERT INTO "Q Other" VALUES ('x', 1);
COMMIT;
-- T2, T3: updates; T3 changes a key (1 -> 10) and leaves doc unchanged.
UPDATE q_acc SET balance = 125 WHERE id = 1;
UPDATE q_acc SET id = 10, owner = 'alice2' WHERE id = 1;
SELECT public.wait_sub('q');
SELECT pg_current_wal_lsn() AS lsn_after_t3 \gset
SELECT now() AS time_after_t3 \gset
-- T4: delete bob, update the moved row again (doc unchanged again).
BEGIN;
DELETE FROM q_acc WHERE id = 2;
UPDATE q_acc SET balance = 130 WHERE id = 10;
COMMIT;
-- T5: full identity table; T6: a table without key.
INSERT INTO q_full VALUES (1, 'one'), (2, 'two');
UPDATE q_full SET b = 'uno' WHERE a = 1;
INSERT INTO q_nokey VALUES (1);
SELECT public.wait_sub('q');

-- The cursor: everything, in order, once.
SELECT seq, op, table_name, new ->> 'id' AS id, unchanged FROM pgrpl.changes('q');
-- max_rows never splits a transaction: 1 and 4 both give the whole of T1.
SELECT count(*) FROM pgrpl.changes('q', max_rows => 1);
SELECT count(*) FROM pgrpl.changes('q', max_rows => 4);
-- 5 rows: T1 (4) and T2 (1).
SELECT count(*) FROM pgrpl.changes('q', max_rows => 5);
-- Looping with after_lsn = the last commit_lsn seen returns every change
-- exactly once, in order, whatever max_rows is.
CREATE TEMP TABLE q_seen (commit_lsn pg_lsn, seq int);
DO $$
DECLARE
    cursor_lsn pg_lsn := NULL;
    n bigint;
    rounds int := 0;
BEGIN
    LOOP
        INSERT INTO q_seen SELECT c.commit_lsn, c.seq
          FROM pgrpl.changes('q', after_lsn => cursor_lsn, max_rows => 2) c;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        SELECT max(commit_lsn) INTO cursor_lsn FROM q_seen;
        rounds := rounds + 1;
    END LOOP;
    RAISE NOTICE 'cursor rounds: %', rounds;
END $$;
SELECT (SELECT count(*) FROM q_seen) AS seen,
       (SELECT count(DISTINCT (commit_lsn, seq)) FROM q_seen) AS distinct_seen,
       (SELECT count(*) FROM pgrpl.changes('q')) AS total;
-- after_lsn past the end: nothing.
SELECT count(*) FROM pgrpl.changes('q', after_lsn => 'FFFFFFFF/FFFFFFFF');
-- One relation, with quoted and unqualified names.
SELECT op, new FROM pgrpl.changes('q', relation => 'public."Q Other"');
SELECT count(*) FROM pgrpl.changes('q', relation => 'q_full');
SELECT count(*) FROM pgrpl.changes('q', relation => 'public.nosuch');

-- transactions(): one row per transaction with its change count.
SELECT dense_rank() OVER (ORDER BY commit_lsn) AS txn, changes, end_lsn > commit_lsn AS ok
  FROM pgrpl.transactions('q');
SELECT count(*) FROM pgrpl.transactions('q', max_rows => 2);
SELECT count(*) FROM pgrpl.transactions('q', after_lsn => :'lsn_after_t3');

-- row_history() follows the key change 1 -> 10 both ways.
SELECT op, old, new - 'doc' AS new, unchanged, row_key FROM pgrpl.row_history('q', 'public.q_acc', '{"id": 1}');
SELECT count(*) FROM pgrpl.row_history('q', 'q_acc', '{"id": 10}');
SELECT op, row_key FROM pgrpl.row_history('q', 'q_acc', '{"id": 2}');
SELECT count(*) FROM pgrpl.row_history('q', 'q_acc', '{"id": 999}');
-- Full identity: the key is the whole row, and updates link old and new.
SELECT op, old, new FROM pgrpl.row_history('q', 'q_full', '{"a": 1, "b": "one"}');

-- table_as_of(NULL) is the table as it is now (unchanged TOAST filled in
-- from the log through the key change).
SELECT (SELECT array_agg(x ORDER BY x ->> 'id') FROM pgrpl.table_as_of('q', 'q_acc') x)
     = (SELECT array_agg(to_jsonb(t) ORDER BY t.id::text) FROM q_acc t) AS acc_now_matches;
SELECT (SELECT array_agg(x ORDER BY x::text) FROM pgrpl.table_as_of('q', 'q_full') x)
     = (SELECT array_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text) FROM q_full t) AS full_now_matches;
SELECT x FROM pgrpl.table_as_of('q', '"Q Other"') x;
-- As of the LSN after T3: bob still there, alice moved to 10.
SELECT x ->> 'id' AS id, x ->> 'owner' AS owner, x ->> 'balance' AS balance,
       md5(x ->> 'doc') = md5(q_big(1)) AS doc_is_big
  FROM pgrpl.table_as_of('q', 'q_acc', :'lsn_after_t3'::pg_lsn) x ORDER BY 1;
-- The same by time, and before anything: empty.
SELECT count(*) FROM pgrpl.table_as_of('q', 'q_acc', :'time_after_t3'::timestamptz);
SELECT count(*) FROM pgrpl.table_as_of('q', 'q_acc', '0/1'::pg_lsn);
SELECT count(*) FROM pgrpl.table_as_of('q', 'q_acc', '2000-01-01'::timestamptz);
-- TRUNCATE empties the table; rows inserted after it in the same
-- transaction remain.
BEGIN;
TRUNCATE "Q Other";
INSERT INTO "Q Other" VALUES ('after', 2);
COMMIT;
SELECT public.wait_sub('q');
SELECT x FROM pgrpl.table_as_of('q', 'public."Q Other"') x;
-- A table captured without a key cannot be rebuilt.
SELECT count(*) FROM pgrpl.table_as_of('q', 'q_nokey');

-- purge: whole transactions before the LSN; the rebuild then only knows
-- rows changed since, and an unchanged TOAST value it never saw is absent.
SELECT pgrpl.purge('q', :'lsn_after_t3'::pg_lsn) AS purged;
SELECT count(*) FROM pgrpl.changes('q');
SELECT count(*) FROM pgrpl.transactions('q');
SELECT x ->> 'id' AS id, x ->> 'balance' AS balance, x ? 'doc' AS has_doc
  FROM pgrpl.table_as_of('q', 'q_acc') x ORDER BY 1;
SELECT pgrpl.purge('q', :'lsn_after_t3'::pg_lsn) AS purged_again;
-- by time: everything committed before now.
SELECT pgrpl.purge('q', now() + interval '1 day') > 0 AS purged_all;
SELECT count(*) FROM pgrpl.changes('q');
SELECT pgrpl.purge('q', now()) AS nothing_left;

-- Errors.
SELECT * FROM pgrpl.changes('q', max_rows => 0);
SELECT * FROM pgrpl.changes('q', relation => 'a.b.c');
SELECT * FROM pgrpl.changes('q', relation => '"unterminated');
SELECT * FROM pgrpl.transactions('nosuch');
SELECT * FROM pgrpl.transactions('q', max_rows => -1);
SELECT * FROM pgrpl.row_history('q', 'q_acc', '[1]');
SELECT * FROM pgrpl.row_history('q', 'q_acc', NULL);
SELECT * FROM pgrpl.row_history('q', NULL, '{"id": 1}');
SELECT * FROM pgrpl.row_history('nosuch', 'q_acc', '{"id": 1}');
SELECT * FROM pgrpl.table_as_of('nosuch', 'q_acc');
SELECT * FROM pgrpl.table_as_of('q', 'x; DROP TABLE q_acc');
SELECT pgrpl.purge('q', NULL::pg_lsn);
SELECT pgrpl.purge('q', NULL::timestamptz);
SELECT pgrpl.purge('nosuch', '0/0'::pg_lsn);
SELECT count(*) FROM q_acc;

-- A reader role: EXECUTE on the read functions is enough, without any
-- privilege on the tables; management stays superuser-only.
CREATE ROLE regress_pgrpl_reader;
GRANT USAGE ON SCHEMA pgrpl TO regress_pgrpl_reader;
GRANT EXECUTE ON FUNCTION pgrpl.changes(text, pg_lsn, bigint, text),
                         pgrpl.transactions(text, pg_lsn, bigint),
                         pgrpl.row_history(text, text, jsonb),
                         pgrpl.table_as_of(text, text, pg_lsn) TO regress_pgrpl_reader;
INSERT INTO q_acc VALUES (4, 'dave', 1, NULL);
SELECT public.wait_sub('q');
SET ROLE regress_pgrpl_reader;
SELECT op, new FROM pgrpl.changes('q');
SELECT count(*) FROM pgrpl.table_as_of('q', 'q_acc');
SELECT count(*) FROM pgrpl.change;
SELECT conninfo FROM pgrpl.subscription;
SELECT pgrpl.purge('q', '0/0'::pg_lsn);
SELECT pgrpl.drop_subscription('q');
RESET ROLE;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrpl FROM regress_pgrpl_reader;
REVOKE ALL ON SCHEMA pgrpl FROM regress_pgrpl_reader;
DROP ROLE regress_pgrpl_reader;

SELECT pgrpl.drop_subscription('q');
DROP PUBLICATION q_pub, q_pub_ins;
