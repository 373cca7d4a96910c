--
-- typecache: how a user type's values convert follows this server's
-- catalogs while the worker runs.
--
-- The primary is another database of this server, so that its types and
-- ours are separate: the primary's table never changes (no new RELATION
-- message), yet each change below is converted with the subscriber's types
-- as they are when it arrives -- dropped and recreated differently, gone,
-- created late, in a renamed schema, with a cast to json added or dropped.
--
\set VERBOSITY terse
\set subdb :DBNAME

CREATE DATABASE pgrpl_typecache_primary TEMPLATE template0;
\c pgrpl_typecache_primary
CREATE TYPE public.tc_pair AS (a int, b text);
CREATE TYPE public.tc_mood AS ENUM ('sad', 'happy');
CREATE SCHEMA tc_s;
CREATE TYPE tc_s.tc_pt AS (x int, y int);
CREATE TABLE public.tc (id int PRIMARY KEY, p public.tc_pair,
                        ps public.tc_pair[], m public.tc_mood, q tc_s.tc_pt);
CREATE PUBLICATION tc_pub FOR TABLE public.tc;
-- One row per step: (n, (n,'rN'), {(n,'rN')}, happy, (n,10n)).
CREATE PROCEDURE public.tc_insert(n int)
LANGUAGE sql AS $$
    INSERT INTO public.tc
    VALUES (n, ROW(n, 'r' || n), ARRAY[ROW(n, 'r' || n)::public.tc_pair],
            'happy', ROW(n, 10 * n))
$$;

\c :subdb
-- Here: the same tc_pair and tc_mood, no schema tc_s yet.
CREATE TYPE public.tc_pair AS (a int, b text);
CREATE TYPE public.tc_mood AS ENUM ('sad', 'happy');
CREATE FUNCTION public.tc_mood_json(public.tc_mood) RETURNS json
LANGUAGE sql IMMUTABLE AS $$ SELECT json_build_object('mood', $1::text) $$;

-- Wait until the subscription has caught up with this server, and show the
-- last row it captured.  "failed": the worker has hit an error at some
-- point (last_error_time stays set; last_error is cleared by the retry,
-- whose new session resolves every type afresh and would hide a stale one).
CREATE FUNCTION public.tc_next(OUT caught_up boolean, OUT captured jsonb,
                               OUT failed boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    target pg_lsn := pg_current_wal_lsn();
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        caught_up := pgrpl.wait_for_lsn('typecache', target, '1s');
        SELECT s.last_error_time IS NOT NULL INTO failed
          FROM pgrpl.stat_subscription s WHERE s.name = 'typecache';
        EXIT WHEN caught_up OR failed OR clock_timestamp() > deadline;
    END LOOP;
    SELECT c.new INTO captured FROM pgrpl.changes('typecache') c
     ORDER BY c.commit_lsn DESC, c.seq DESC LIMIT 1;
END
$$;

SELECT pgrpl.create_subscription('typecache',
           public.loopback_conninfo() || ' dbname=pgrpl_typecache_primary',
           ARRAY['tc_pub'], copy_data => false) IS NOT NULL AS created;

-- 1: as on the primary, except q (its type is unknown here: text).
\c pgrpl_typecache_primary
CALL public.tc_insert(1);
\c :subdb
SELECT * FROM public.tc_next();
SELECT pid AS tc_pid FROM pgrpl.stat_subscription WHERE name = 'typecache' \gset

-- 2: tc_pair dropped and recreated differently (its array type too): the
-- new definition, not the input function of a type that is gone.
DROP TYPE public.tc_pair;
CREATE TYPE public.tc_pair AS (x text, y text);
\c pgrpl_typecache_primary
CALL public.tc_insert(2);
\c :subdb
SELECT * FROM public.tc_next();

-- 3: tc_pair gone: the primary's text.
DROP TYPE public.tc_pair;
\c pgrpl_typecache_primary
CALL public.tc_insert(3);
\c :subdb
SELECT * FROM public.tc_next();

-- 4: tc_pair back (a type created under the name looked for): objects.
CREATE TYPE public.tc_pair AS (a int, b text);
\c pgrpl_typecache_primary
CALL public.tc_insert(4);
\c :subdb
SELECT * FROM public.tc_next();

-- 5: schema tc_s and tc_s.tc_pt created: q is an object.
CREATE SCHEMA tc_s;
CREATE TYPE tc_s.tc_pt AS (x int, y int);
\c pgrpl_typecache_primary
CALL public.tc_insert(5);
\c :subdb
SELECT * FROM public.tc_next();

-- 6: schema tc_s renamed (no pg_type row changes): q is text again.
ALTER SCHEMA tc_s RENAME TO tc_s_moved;
\c pgrpl_typecache_primary
CALL public.tc_insert(6);
\c :subdb
SELECT * FROM public.tc_next();

-- 7: a cast of tc_mood to json: to_jsonb() goes through it.
CREATE CAST (public.tc_mood AS json) WITH FUNCTION public.tc_mood_json(public.tc_mood);
\c pgrpl_typecache_primary
CALL public.tc_insert(7);
\c :subdb
SELECT * FROM public.tc_next();

-- 8: and without it again.
DROP CAST (public.tc_mood AS json);
\c pgrpl_typecache_primary
CALL public.tc_insert(8);
\c :subdb
SELECT * FROM public.tc_next();

-- The same worker did it all, without an error.
SELECT pid = :tc_pid AS same_worker, last_error_time IS NULL AS no_error
  FROM pgrpl.stat_subscription WHERE name = 'typecache';

SELECT pgrpl.drop_subscription('typecache');
DROP FUNCTION public.tc_next();
DROP FUNCTION public.tc_mood_json(public.tc_mood);
DROP TYPE public.tc_pair;
DROP TYPE public.tc_mood;
DROP SCHEMA tc_s_moved CASCADE;
DROP DATABASE pgrpl_typecache_primary WITH (FORCE);
