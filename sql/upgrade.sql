--
-- upgrade: ALTER EXTENSION pgrpl UPDATE from 1.0 gives what a fresh
-- install of the default version gives, and brings rows captured under 1.0
-- in line with 1.1's row lookup key.  Runs after teardown (nothing is
-- captured any more); leaves a fresh default install behind.
--
\set VERBOSITY terse

-- What makes up the installed extension: its members, the source of its
-- functions, the change log's columns (with compression) and indexes.
CREATE FUNCTION pg_temp.pgrpl_shape() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, 0)
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'pgrpl' AND d.deptype = 'e'
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid))
      FROM pg_proc p WHERE p.pronamespace = 'pgrpl'::regnamespace AND p.prokind <> 'a'
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' ' || a.attnotnull || ' ' || a.attcompression::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     WHERE c.relnamespace = 'pgrpl'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace = 'pgrpl'::regnamespace
    UNION ALL
    SELECT 'comment ' || pg_describe_object(classoid, objoid, objsubid) || ' ' || description
      FROM pg_description
     WHERE classoid = 'pg_proc'::regclass
       AND objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'pgrpl'::regnamespace)
$$;

DROP EXTENSION pgrpl;
CREATE EXTENSION pgrpl VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pgrpl';

-- Rows as 1.0 wrote them: hash lookup keys (here any value 1.1 would not
-- give), one key change, one message without a key.
INSERT INTO pgrpl.change (sub_id, commit_lsn, seq, lsn, op, schema_name, table_name,
                          new, row_key, key_hash, old_key)
VALUES (1, '0/100', 1, '0/100', 'I', 'public', 't', '{"id": 5}', '{"id": 5}', 12345, NULL),
       (1, '0/200', 1, '0/200', 'U', 'public', 't', '{"id": 6}', '{"id": 6}', 999, '{"id": 5}'),
       (1, '0/300', 1, '0/300', 'I', 'public', 'u', '{"k": "x"}', '{"k": "x"}', 1, NULL),
       (1, '0/400', 1, '0/400', 'M', NULL, NULL, NULL, NULL, NULL, NULL);
SELECT count(*) FILTER (WHERE key_hash IS DISTINCT FROM pgrpl.key_hash(schema_name, table_name, row_key)) AS stale
  FROM pgrpl.change WHERE row_key IS NOT NULL;

ALTER EXTENSION pgrpl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pgrpl';
SELECT count(*) FILTER (WHERE key_hash IS DISTINCT FROM pgrpl.key_hash(schema_name, table_name, row_key)) AS stale,
       count(*) FILTER (WHERE row_key IS NULL AND key_hash IS NULL) AS keyless
  FROM pgrpl.change;
-- Both lookup indexes find the rows by 1.1's key.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT commit_lsn FROM pgrpl.change
 WHERE sub_id = 1 AND key_hash = pgrpl.key_hash('public', 't', '{"id": 6}');
SELECT commit_lsn FROM pgrpl.change
 WHERE sub_id = 1 AND old_key IS NOT NULL
   AND pgrpl.key_hash(schema_name, table_name, old_key) = pgrpl.key_hash('public', 't', '{"id": 5}');
RESET enable_seqscan;
RESET enable_bitmapscan;

CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.pgrpl_shape() s;
TRUNCATE pgrpl.change;
DROP EXTENSION pgrpl;
CREATE EXTENSION pgrpl;
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.pgrpl_shape() s;
SELECT (SELECT count(*) FROM fresh) > 50 AS shape_is_seen;
-- no difference either way
(SELECT * FROM fresh EXCEPT SELECT * FROM upgraded)
UNION ALL
(SELECT * FROM upgraded EXCEPT SELECT * FROM fresh);
