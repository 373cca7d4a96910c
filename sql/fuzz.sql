--
-- fuzz: pgrpl.decode() on thousands of mutated real pgoutput messages.
--
-- The corpus (test/fuzz/corpus.hex, one message a line, made by
-- test/fuzz/capture.sh from test/fuzz/workload.sql) holds every message
-- type over many column types.  Each case mutates one message (bit flips,
-- byte changes, inserts, deletes, truncations, 2- and 4-byte fields set to
-- extremes, column lengths set to extremes, splices of two messages,
-- duplicated segments, several at once) with a fixed-seed generator, so
-- the cases are the same on every run.  Each must decode or fail with a
-- clean ERROR, protocol_violation; the backend must survive (a crash would
-- fail every later statement).  Only counts and booleans are printed: which
-- mutants decode depends on the database encoding.
-- test/fuzz/fuzz.c is the standalone driver for long runs.
--
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\set corpus_file :abs_srcdir '/test/fuzz/corpus.hex'

-- ---- lengths from the wire are checked before anything is allocated ------
--
-- (First, while this backend is fresh.)  VmPeak, the backend's peak virtual
-- size, shows any large allocation, even one never touched: a column value
-- claiming 1 GB must fail before the server's readers allocate for it.
CREATE FUNCTION pg_temp.vmpeak_kb() RETURNS bigint LANGUAGE sql AS $$
    SELECT substring(pg_read_file('/proc/self/status') FROM 'VmPeak:\s*(\d+)')::bigint
$$;
CREATE FUNCTION pg_temp.rejects(m bytea) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgrpl.decode(m);
    RETURN false;
EXCEPTION WHEN protocol_violation THEN
    RETURN true;
END $$;
CREATE TEMP TABLE fuzz_peak AS SELECT pg_temp.vmpeak_kb() AS before;
SELECT pg_temp.rejects(m) AS rejected, length(m) AS bytes
  FROM unnest(ARRAY[
    -- INSERT, 1 column: text of length 0x3ffffffe (the largest palloc), 4 bytes present
    '\x49000000014e0001743ffffffe41424344',
    -- the same as the second of 1664 columns
    '\x49000000014e0680740000000141743ffffffe41424344',
    -- UPDATE with old key: the old tuple's value claims 0x3ffffff0 bytes
    '\x55000000014b000174' || '\x3ffffff0'::bytea || '\x414e0001740000000142',
    -- DELETE, full old row, length 0x7fffffff and 0x80000000 (negative)
    '\x44000000014f0001747fffffff',
    '\x44000000014f00017480000000',
    -- binary kind, 0x3ffffffe
    '\x49000000014e0001623ffffffe00',
    -- RELATION with 65535 columns and nothing after the count
    '\x52000000017075626c69630074006400ffff',
    -- RELATION with 1665 columns (one more than any table can have)
    '\x52000000017075626c6963007400640681',
    -- TRUNCATE of 0x3fffffff relations
    '\x543fffffff0000000001',
    -- MESSAGE whose content claims 0x3ffffffe bytes
    '\x4d0000000000000000017000' || '\x3ffffffe'::bytea || '\x61'
  ]::bytea[]) AS m;
SELECT pg_temp.vmpeak_kb() - before < 100 * 1024 AS no_large_allocation FROM fuzz_peak;

-- Text that is not valid in the server encoding, or holds a NUL byte, is
-- rejected rather than stored: a column value with a NUL, a relation name
-- with a NUL inside its declared bytes cannot be expressed, but a value can.
SELECT pg_temp.rejects('\x49000000014e000174000000036100' || '\x62'::bytea) AS nul_in_value;
-- Names longer than NAMEDATALEN - 1 cannot come from PostgreSQL.
SELECT pg_temp.rejects('\x5900000001' || convert_to(repeat('n', 64), 'UTF8') || '\x00' || '\x7400'::bytea)
       AS long_type_namespace;
-- A well-formed message just under the limits still decodes.
SELECT pgrpl.decode('\x5900000001' || convert_to(repeat('n', 63), 'UTF8') || '\x00' || '\x7400'::bytea)
       ->> 'name' AS type_name;
SELECT jsonb_array_length(pgrpl.decode('\x49000000014e0680' || decode(repeat('6e', 1664), 'hex')) -> 'new')
       AS null_columns;

-- ---- the fuzz run -------------------------------------------------------------

CREATE TEMP TABLE fuzz_corpus (n serial, hex text);
COPY fuzz_corpus (hex) FROM :'corpus_file';
CREATE TEMP TABLE fuzz_msgs AS
SELECT n, decode(hex, 'hex') AS data FROM fuzz_corpus;

-- The corpus: all ten message types, and every message decodes as is.
SELECT count(*) >= 90 AS enough_messages,
       string_agg(DISTINCT chr(get_byte(data, 0)), '' ORDER BY chr(get_byte(data, 0))) AS types
  FROM fuzz_msgs;
SELECT count(*) FILTER (WHERE pgrpl.decode(data) IS NOT NULL) = count(*) AS all_decode
  FROM fuzz_msgs;
-- The same whatever the session's client_encoding: the names in the
-- corpus ("fz Quoted ""Name"" é", "ü") are the server's bytes, not the
-- client's, and are not converted.
CREATE TEMP TABLE fuzz_decoded AS SELECT n, pgrpl.decode(data) AS j FROM fuzz_msgs;
SET client_encoding = 'LATIN1';
SELECT count(*) FILTER (WHERE pgrpl.decode(m.data) = d.j) = count(*) AS same_in_latin1
  FROM fuzz_msgs m JOIN fuzz_decoded d USING (n);
SHOW client_encoding;
RESET client_encoding;

-- A deterministic generator: draw i of case seed, in [0, n).
CREATE FUNCTION pg_temp.rnd(seed bigint, i int, n int) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT (abs(hashint8extended(seed * 1000 + i, 20240229) % greatest(n, 1)))::int
$$;

-- One mutation of m (other: a second message, for splices).
CREATE FUNCTION pg_temp.mutate_once(m bytea, other bytea, seed bigint) RETURNS bytea
LANGUAGE plpgsql AS $$
DECLARE
    len int := length(m);
    op int := pg_temp.rnd(seed, 0, 11);
    pos int := pg_temp.rnd(seed, 1, len);     -- 0-based
    i int;
    extremes4 bytea[] := ARRAY['\x00000000', '\xffffffff', '\x7fffffff', '\x80000000',
                               '\x3ffffffe', '\x3fffffff', '\x00010000', '\xfffffffe']::bytea[];
    extremes2 bytea[] := ARRAY['\x0000', '\xffff', '\x7fff', '\x0681', '\x0680', '\x8000']::bytea[];
    tail int;
BEGIN
    IF len = 0 THEN
        RETURN '\x49'::bytea;
    END IF;
    CASE op
    WHEN 0 THEN     -- flip one bit
        i := pos * 8 + pg_temp.rnd(seed, 3, 8);
        RETURN set_bit(m, i, 1 - get_bit(m, i));
    WHEN 1 THEN     -- one byte, any value
        RETURN set_byte(m, pos, pg_temp.rnd(seed, 4, 256));
    WHEN 2 THEN     -- insert a byte
        RETURN substring(m FROM 1 FOR pos) || set_byte('\x00'::bytea, 0, pg_temp.rnd(seed, 5, 256))
               || substring(m FROM pos + 1);
    WHEN 3 THEN     -- delete a byte
        RETURN substring(m FROM 1 FOR pos) || substring(m FROM pos + 2);
    WHEN 4 THEN     -- truncate
        RETURN substring(m FROM 1 FOR pos);
    WHEN 5 THEN     -- a 4-byte field set to an extreme
        RETURN overlay(m PLACING extremes4[1 + pg_temp.rnd(seed, 6, 8)] FROM pos + 1 FOR 4);
    WHEN 6 THEN     -- a 2-byte field (column counts) set to an extreme
        RETURN overlay(m PLACING extremes2[1 + pg_temp.rnd(seed, 7, 6)] FROM pos + 1 FOR 2);
    WHEN 7 THEN     -- the length after a 't'/'b' column kind set to an extreme
        FOR i IN pos .. len - 5 LOOP
            IF get_byte(m, i) IN (116, 98) THEN
                RETURN overlay(m PLACING extremes4[1 + pg_temp.rnd(seed, 8, 8)] FROM i + 2 FOR 4);
            END IF;
        END LOOP;
        RETURN overlay(m PLACING '\x7fffffff'::bytea FROM pos + 1 FOR 4);
    WHEN 8 THEN     -- splice: a prefix of this message, a suffix of another
        tail := pg_temp.rnd(seed, 9, length(other) + 1);
        RETURN substring(m FROM 1 FOR pos + 1) || substring(other FROM tail + 1);
    WHEN 9 THEN     -- duplicate a segment
        tail := 1 + pg_temp.rnd(seed, 10, 16);
        RETURN substring(m FROM 1 FOR pos + tail) || substring(m FROM pos + 1 FOR tail)
               || substring(m FROM pos + tail + 1);
    ELSE            -- the tuple column count (after type, relid, tag)
        IF len >= 8 THEN
            RETURN overlay(m PLACING extremes2[1 + pg_temp.rnd(seed, 11, 6)] FROM 7 FOR 2);
        END IF;
        RETURN m || '\x00'::bytea;
    END CASE;
END $$;

-- Run n cases: mutate 1-4 times, decode, classify.
CREATE FUNCTION pg_temp.fuzz(ncases int,
                             OUT cases int, OUT decoded int, OUT protocol_violation int,
                             OUT other_errors int, OUT other_states text)
LANGUAGE plpgsql AS $$
DECLARE
    msgs bytea[] := ARRAY(SELECT data FROM fuzz_msgs ORDER BY n);
    m bytea;
    states text[] := '{}';
BEGIN
    cases := 0; decoded := 0; protocol_violation := 0; other_errors := 0;
    FOR c IN 1 .. ncases LOOP
        m := msgs[1 + pg_temp.rnd(c, 0, cardinality(msgs))];
        FOR k IN 0 .. (CASE WHEN pg_temp.rnd(c, 1, 4) = 0 THEN 1 + pg_temp.rnd(c, 2, 3) ELSE 0 END) LOOP
            m := pg_temp.mutate_once(m, msgs[1 + pg_temp.rnd(c, 3 + k, cardinality(msgs))],
                                     c * 8 + k);
        END LOOP;
        cases := cases + 1;
        BEGIN
            PERFORM pgrpl.decode(m);
            decoded := decoded + 1;
        EXCEPTION
            WHEN protocol_violation THEN
                protocol_violation := protocol_violation + 1;
            WHEN OTHERS THEN
                other_errors := other_errors + 1;
                IF NOT SQLSTATE = ANY (states) THEN
                    states := states || SQLSTATE;
                    RAISE NOTICE 'unexpected error % for %: %', SQLSTATE, m, SQLERRM;
                END IF;
        END;
    END LOOP;
    other_states := array_to_string(states, ',');
END $$;

SELECT cases, decoded > 0 AS some_decoded, protocol_violation > cases / 2 AS mostly_rejected,
       other_errors, other_states
  FROM pg_temp.fuzz(3000);

