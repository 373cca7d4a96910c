--
-- abuse: hostile input to every SQL function -- injection attempts in
-- names, overlong names, NULLs, hostile connection strings.  Each is a
-- clear error or harmless; nothing is ever executed (the victim table and
-- its row survive); nothing is left behind.  (api_errors covers the plain
-- error cases: syntax errors, unknown names, NULL management arguments,
-- empty and 2-D publication arrays, privileges.)
--
\set VERBOSITY terse

CREATE TABLE abuse_victim (id int PRIMARY KEY);
INSERT INTO abuse_victim VALUES (1);
CREATE PUBLICATION abuse_pub FOR TABLE abuse_victim;

-- Runs a statement; its SQLSTATE, or 'ok'.  For errors whose text holds
-- paths, ports or libpq wording that varies.
CREATE FUNCTION public.abuse_state(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

-- ---- hostile connection strings -----------------------------------------------

-- libpq options that fail at connect time: 08006, nothing created.  (Run
-- in a subtransaction, so without creating a slot: a connection that did
-- succeed would end in 42704, no such slot.)
SELECT public.abuse_state(format(
           'SELECT pgrpl.create_subscription(%L, %L, ARRAY[%L], slot_name => %L, create_slot => false)',
           'abuse_c', c, 'abuse_pub', 'abuse_none'))
       AS sqlstate, note
  FROM (VALUES
    (public.loopback_conninfo() || ' service=nosuch', 'unknown service'),
    (public.loopback_conninfo() || ' sslmode=bogus', 'bad sslmode'),
    (public.loopback_conninfo() || ' port=notaport', 'bad port'),
    (public.loopback_conninfo() || $$ options='-c no_such_parameter=1'$$, 'options rejected by the primary'),
    (public.loopback_conninfo() || ' user=abuse_nosuchuser', 'unknown role'),
    (public.loopback_conninfo() || $$ dbname='x; DROP TABLE abuse_victim; --'$$, 'injection as a database name'),
    (public.loopback_conninfo() || ' target_session_attrs=read-only', 'not a standby'),
    (public.loopback_conninfo() || ' dbname=' || repeat('d', 100000), '100 kB database name'),
    (public.loopback_conninfo() || ' application_name=' || repeat('a', 100000), '100 kB application_name'),
    ('host=/' || repeat('h', 100000) || ' connect_timeout=5', '100 kB socket directory'),
    ($$host='/nonexistent dir' port=1$$, 'no such socket directory')
  ) AS t(c, note);
-- Connection strings that do not parse: 42601, and never quoted back when
-- they hold a password.
SELECT pgrpl.create_subscription('abuse_c', $$password='x'; DROP TABLE abuse_victim; --'$$,
                                 ARRAY['abuse_pub']);
SELECT pgrpl.create_subscription('abuse_c', repeat('k', 100000), ARRAY['abuse_pub']);
SELECT pgrpl.alter_subscription('abuse_nosuch', conninfo => 'password=secret ''');
SELECT count(*) AS subscriptions FROM pgrpl.subscription;

-- Harmless ones: replication=true is replaced by the replication=database
-- pgrpl needs; a 100 kB password is stored and masked; a URI password is
-- masked.  Each subscription works and is dropped again.
SELECT pgrpl.create_subscription('abuse_repl', public.loopback_conninfo() || ' replication=true',
                                 ARRAY['abuse_pub'], enabled => false, copy_data => false) IS NOT NULL AS created;
SELECT pgrpl.create_subscription('abuse_pw', public.loopback_conninfo() || ' password=' || repeat('p', 100000),
                                 ARRAY['abuse_pub'], enabled => false, copy_data => false) IS NOT NULL AS created;
SELECT name, length(conninfo) < 200 AS short, conninfo LIKE '%password=********%' AS masked
  FROM pgrpl.subscriptions WHERE name = 'abuse_pw';
SELECT pgrpl.enable_subscription('abuse_repl');
INSERT INTO abuse_victim VALUES (2);
SELECT public.wait_sub('abuse_repl');
SELECT op, new FROM pgrpl.changes('abuse_repl');
SELECT pgrpl.drop_subscription('abuse_repl');
SELECT pgrpl.drop_subscription('abuse_pw');
SELECT pgrpl.mask_conninfo('postgresql://u:p%40ss@h/db?password=other&sslmode=disable') AS uri;
SELECT pgrpl.mask_conninfo($$password='a\'b, c' host=h$$) AS quoted;
SELECT pgrpl.mask_conninfo('sslpassword=keypass sslkey=/k password=pw host=h') AS sslpassword;
SELECT pgrpl.mask_conninfo('password=' || repeat('p', 100000)) AS long_password;
SELECT pgrpl.mask_conninfo(repeat('k', 100000)) IS NULL AS unparsable;
SELECT pgrpl.mask_conninfo(NULL) IS NULL AS null_in_null_out;

-- ---- names: injection, quotes, commas, backslashes, length ---------------------

-- A slot name is checked before anything is sent to the primary.
SELECT pgrpl.create_subscription('abuse_s', public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 slot_name => 'x; DROP TABLE abuse_victim; --');
SELECT pgrpl.create_subscription('abuse_s', public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 slot_name => $$a"b'c$$);
SELECT pgrpl.create_subscription('abuse_s', public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 slot_name => repeat('s', 64));
-- Publication names are only ever sent quoted: these are names that do not
-- exist, not SQL or replication-command syntax.
SELECT public.create_sub('abuse_p', ARRAY[$$abuse_pub'; DROP TABLE abuse_victim; --$$]);
SELECT public.create_sub('abuse_p', ARRAY['abuse_pub", "x', 'a,b', $$back\slash$$, 'tab	x']);
SELECT public.create_sub('abuse_p', ARRAY[repeat('p', 64)]);
SELECT public.wait_no_walsender('abuse_p');
-- A subscription name is free text (the slot name must then be given):
-- stored and shown as it is, and streams like any other.
SELECT pgrpl.create_subscription($$x'); DROP TABLE abuse_victim; -- "q", \z$$,
                                 public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 slot_name => 'abuse_inj', copy_data => false) IS NOT NULL AS created;
SELECT name, slot_name FROM pgrpl.subscriptions;
INSERT INTO abuse_victim VALUES (3);
SELECT public.wait_sub($$x'); DROP TABLE abuse_victim; -- "q", \z$$);
SELECT op, new FROM pgrpl.changes($$x'); DROP TABLE abuse_victim; -- "q", \z$$);
SELECT pgrpl.drop_subscription($$x'); DROP TABLE abuse_victim; -- "q", \z$$);
-- 63 bytes is the longest name; 64 is refused.
SELECT pgrpl.create_subscription(repeat('n', 63), public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 slot_name => 'abuse_long', enabled => false, copy_data => false) IS NOT NULL AS created;
SELECT length(name) FROM pgrpl.subscriptions;
SELECT pgrpl.drop_subscription(repeat('n', 63));
SELECT pgrpl.create_subscription(repeat('n', 64), public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 slot_name => 'abuse_long');

-- ---- the read functions -----------------------------------------------------

SELECT pgrpl.create_subscription('abuse_r', public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 enabled => false, copy_data => false) IS NOT NULL AS created;
-- Unknown and injected subscription names.
SELECT count(*) FROM pgrpl.changes($$abuse_r'; DROP TABLE abuse_victim; --$$);
SELECT count(*) FROM pgrpl.transactions($$abuse_r" OR true --$$);
SELECT count(*) FROM pgrpl.table_as_of(repeat('r', 100), 'abuse_victim');
-- Relation names: injected, empty, three-part, unterminated quote; a name
-- that parses but does not exist simply has no changes.
SELECT count(*) FROM pgrpl.changes('abuse_r', relation => 'abuse_victim; DROP TABLE abuse_victim');
SELECT count(*) FROM pgrpl.changes('abuse_r', relation => '');
SELECT count(*) FROM pgrpl.row_history('abuse_r', 'a.b.c', '{"id": 1}');
SELECT count(*) FROM pgrpl.table_as_of('abuse_r', '"abuse_victim');
SELECT count(*) FROM pgrpl.changes('abuse_r', relation => $$"abuse_victim'; DROP TABLE abuse_victim; --"$$);
SELECT count(*) FROM pgrpl.table_as_of('abuse_r', $$public."x"")); DROP TABLE abuse_victim; --"$$);
-- Keys that are not objects; a key with hostile contents just matches nothing.
SELECT count(*) FROM pgrpl.row_history('abuse_r', 'abuse_victim', '[1]');
SELECT count(*) FROM pgrpl.row_history('abuse_r', 'abuse_victim', '"x"');
SELECT count(*) FROM pgrpl.row_history('abuse_r', 'abuse_victim', $${"id": "1'); DROP TABLE abuse_victim; --"}$$);
-- NULLs.
SELECT count(*) FROM pgrpl.transactions(NULL);
SELECT count(*) FROM pgrpl.row_history(NULL, 'abuse_victim', '{"id": 1}');
SELECT count(*) FROM pgrpl.row_history('abuse_r', NULL, '{"id": 1}');
SELECT count(*) FROM pgrpl.row_history('abuse_r', 'abuse_victim', NULL);
SELECT count(*) FROM pgrpl.table_as_of(NULL, 'abuse_victim');
SELECT count(*) FROM pgrpl.table_as_of('abuse_r', NULL);
SELECT count(*) FROM pgrpl.table_as_of('abuse_r', 'abuse_victim', NULL::timestamptz);
SELECT count(*) FROM pgrpl.changes('abuse_r', NULL, NULL, NULL);
SELECT pgrpl.purge(NULL, '0/0'::pg_lsn);
SELECT pgrpl.purge('abuse_r', NULL::pg_lsn);
SELECT pgrpl.purge('abuse_r', NULL::timestamptz);
SELECT pgrpl.row_key_hash(NULL) IS NULL AS strict_key_hash;
-- Out-of-range limits.
SELECT count(*) FROM pgrpl.changes('abuse_r', max_rows => 0);
SELECT count(*) FROM pgrpl.transactions('abuse_r', max_rows => -1);
-- Management functions with odd but valid values.
SELECT pgrpl.wait_for_lsn('abuse_r', 'FFFFFFFF/FFFFFFFF', '1 microsecond') AS tiny_timeout;
SELECT pgrpl.set_stop_lsn('abuse_r', '0/0');
SELECT pgrpl.set_stop_lsn('abuse_r', NULL);
SELECT pgrpl.alter_subscription('abuse_r', NULL, NULL);
SELECT pgrpl.drop_subscription('abuse_r');

-- ---- SECURITY DEFINER functions cannot be hijacked ----------------------------
--
-- Every SQL-language function of pgrpl pins search_path to pg_catalog then
-- pg_temp, so the reader's own functions, operators, types and temp objects
-- never replace what the owner's code calls.
SELECT p.proname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'pgrpl'::regnamespace AND l.lanname <> 'c'
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
SELECT count(*) AS security_definer_functions
  FROM pg_proc WHERE pronamespace = 'pgrpl'::regnamespace AND prosecdef;

CREATE ROLE regress_abuse_reader;
CREATE SCHEMA abuse_evil AUTHORIZATION regress_abuse_reader;
GRANT USAGE ON SCHEMA pgrpl TO regress_abuse_reader;
GRANT EXECUTE ON FUNCTION pgrpl.changes(text, pg_lsn, bigint, text),
                         pgrpl.transactions(text, pg_lsn, bigint),
                         pgrpl.row_history(text, text, jsonb),
                         pgrpl.table_as_of(text, text, pg_lsn),
                         pgrpl.table_as_of(text, text, timestamptz) TO regress_abuse_reader;
SELECT pgrpl.create_subscription('abuse_h', public.loopback_conninfo(), ARRAY['abuse_pub'],
                                 copy_data => false) IS NOT NULL AS created;
INSERT INTO abuse_victim VALUES (4);
UPDATE abuse_victim SET id = 5 WHERE id = 4;
SELECT public.wait_sub('abuse_h');
SET ROLE regress_abuse_reader;
-- The trap: functions, an operator and types named like what the read
-- functions use, first in the reader's search_path and in pg_temp, each
-- recording that it ran.
CREATE TABLE abuse_evil.ran (what text);
CREATE FUNCTION abuse_evil.mark(w text) RETURNS boolean LANGUAGE sql AS
    'INSERT INTO abuse_evil.ran VALUES (w) RETURNING true';
CREATE FUNCTION abuse_evil.parse_ident(text, boolean DEFAULT true) RETURNS text[]
    LANGUAGE sql AS $$ SELECT CASE WHEN abuse_evil.mark('parse_ident') THEN ARRAY['x'] END $$;
CREATE FUNCTION abuse_evil.cardinality(anyarray) RETURNS int
    LANGUAGE sql AS $$ SELECT CASE WHEN abuse_evil.mark('cardinality') THEN 1 END $$;
CREATE FUNCTION abuse_evil.jsonb_typeof(jsonb) RETURNS text
    LANGUAGE sql AS $$ SELECT CASE WHEN abuse_evil.mark('jsonb_typeof') THEN 'object' END $$;
CREATE FUNCTION abuse_evil.lsn_gt(pg_lsn, pg_lsn) RETURNS boolean
    LANGUAGE sql AS $$ SELECT abuse_evil.mark('operator >') $$;
CREATE OPERATOR abuse_evil.> (LEFTARG = pg_lsn, RIGHTARG = pg_lsn, FUNCTION = abuse_evil.lsn_gt);
CREATE FUNCTION pg_temp.coalesce(pg_lsn, pg_lsn) RETURNS pg_lsn
    LANGUAGE sql AS $$ SELECT CASE WHEN abuse_evil.mark('pg_temp function') THEN $1 END $$;
CREATE TEMP TABLE jsonb (x int);
CREATE TEMP TABLE pg_lsn (x int);
CREATE TEMP TABLE change (x int);
SET search_path = abuse_evil, pg_temp, public;
SELECT op, old, new FROM pgrpl.changes('abuse_h', relation => 'abuse_victim');
SELECT count(*) AS transactions FROM pgrpl.transactions('abuse_h');
SELECT op FROM pgrpl.row_history('abuse_h', 'public.abuse_victim', '{"id": 5}');
SELECT * FROM pgrpl.table_as_of('abuse_h', 'abuse_victim');
SELECT count(*) AS rows FROM pgrpl.table_as_of('abuse_h', 'abuse_victim', now());
-- None of the traps ran (the trap itself works when called directly).
SELECT count(*) AS trap_calls FROM abuse_evil.ran;
SELECT '0/2'::pg_catalog.pg_lsn OPERATOR(abuse_evil.>) '0/1' AS trap_works;
RESET search_path;
DISCARD TEMP;
RESET ROLE;
SELECT pgrpl.drop_subscription('abuse_h');
DROP SCHEMA abuse_evil CASCADE;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrpl FROM regress_abuse_reader;
REVOKE ALL ON SCHEMA pgrpl FROM regress_abuse_reader;
DROP ROLE regress_abuse_reader;

-- ---- nothing was executed, nothing is left --------------------------------------

SELECT count(*) AS victim_rows FROM abuse_victim;
SELECT to_regclass('public.abuse_victim') IS NOT NULL AS victim_exists;
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS slots FROM pg_replication_slots;
SELECT public.wait_no_walsender('abuse_c') AND public.wait_no_walsender('abuse_p') AS no_walsenders;

DROP FUNCTION public.abuse_state(text);
DROP PUBLICATION abuse_pub;
DROP TABLE abuse_victim;
