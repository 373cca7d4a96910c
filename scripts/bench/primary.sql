-- scripts/bench/primary.sql: publication, backlog builders and the drain
-- wait of the primary (after tables.sql).

CREATE PUBLICATION bench_pub
    FOR TABLE public.bench_a, public.bench_b, public.bench_c, public.bench_d, public.bench_lat;

-- (a) n small transactions.  Transaction i inserts row i, updates row
-- i - 100 and deletes row i - 200: 3n - 300 changes (n > 200), every row
-- it touches was inserted inside the backlog (the replica starts empty).
CREATE PROCEDURE public.bench_build_a(ntxns integer)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..ntxns LOOP
        INSERT INTO public.bench_a VALUES (i, i % 1000, md5(i::text), i * 1.5, clock_timestamp());
        UPDATE public.bench_a SET k = k + 1, n = n + 1, ts = clock_timestamp() WHERE id = i - 100;
        DELETE FROM public.bench_a WHERE id = i - 200;
        COMMIT;
    END LOOP;
END
$$;

-- (b) one transaction of n INSERTs.
CREATE PROCEDURE public.bench_build_b(nrows integer)
LANGUAGE sql AS $$
    INSERT INTO public.bench_b
    SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, nrows) g;
$$;

-- (c) nrows wide rows inserted `batch` per transaction, then `rounds`
-- passes updating every row (batch rows per transaction) without touching
-- the TOASTed column: nrows * (1 + rounds) changes.  big is 8-20 kB of
-- random hex (250..625 md5s), kept out of line uncompressed.
CREATE PROCEDURE public.bench_build_c(nrows integer, rounds integer, batch integer)
LANGUAGE plpgsql AS $$
BEGIN
    FOR s IN 0..(nrows - 1) / batch LOOP
        INSERT INTO public.bench_c
        SELECT g, g, g * 10, g * 1.25, md5(g::text), now(), g % 2 = 0, g * 0.5,
               'text ' || g, g % 100, current_date, repeat('x', 20), g, g,
               md5((g + 1)::text), g, now(), 'label', g * 1.1,
               (SELECT string_agg(md5(random()::text || g::text || piece::text), '')
                  FROM generate_series(1, 250 + (g * 7919) % 376) piece)
          FROM generate_series(s * batch + 1, least((s + 1) * batch, nrows)) g;
        COMMIT;
    END LOOP;
    FOR r IN 1..rounds LOOP
        FOR s IN 0..(nrows - 1) / batch LOOP
            UPDATE public.bench_c
               SET c01 = c01 + 1, c05 = clock_timestamp(), c07 = c07 + 1, c15 = r
             WHERE id > s * batch AND id <= (s + 1) * batch;
            COMMIT;
        END LOOP;
    END LOOP;
END
$$;

-- (d) ntxns small transactions of 2 changes each: an upsert inserting row
-- base + i, then an UPDATE of the row the previous one inserted (i even) or
-- a DELETE of the one inserted two before (i odd; transaction 1 updates its
-- own row); after half of them, one transaction inserting nrows rows.
-- 2 * ntxns + nrows changes.
CREATE PROCEDURE public.bench_build_d(ntxns integer, nrows integer)
LANGUAGE plpgsql AS $$
DECLARE
    base constant bigint := 1000000000;
BEGIN
    FOR i IN 1..ntxns LOOP
        INSERT INTO public.bench_d VALUES (base + i, i % 1000, md5(i::text), clock_timestamp())
            ON CONFLICT (id) DO UPDATE SET k = excluded.k, v = excluded.v, ts = excluded.ts;
        IF i % 2 = 0 THEN
            UPDATE public.bench_d SET k = k + 1, ts = clock_timestamp() WHERE id = base + i - 1;
        ELSIF i >= 3 THEN
            DELETE FROM public.bench_d WHERE id = base + i - 2;
        ELSE
            UPDATE public.bench_d SET k = k + 1 WHERE id = base + i;
        END IF;
        COMMIT;
        IF i = ntxns / 2 THEN
            INSERT INTO public.bench_d
            SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, nrows) g;
            COMMIT;
        END IF;
    END LOOP;
END
$$;

-- Poll a slot until its confirmed_flush_lsn reaches target (true), or the
-- timeout passes (false).  pg_replication_slots reads shared memory, so
-- every poll sees the current value.
CREATE FUNCTION public.bench_wait_slot(slot text, target pg_lsn, timeout_s float8)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
    confirmed pg_lsn;
BEGIN
    LOOP
        SELECT s.confirmed_flush_lsn INTO confirmed
          FROM pg_replication_slots s WHERE s.slot_name = slot;
        IF confirmed >= target THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
