-- scripts/bench/tables.sql: the benchmark tables, created identically on the
-- primary and (empty, as replica tables for the built-in subscription) on
-- the subscriber.  All have a primary key (replica identity default).

-- (a) many small transactions: INSERT + UPDATE + DELETE each
CREATE TABLE public.bench_a (
    id bigint PRIMARY KEY,
    k  integer NOT NULL,
    v  text,
    n  numeric,
    ts timestamptz
);

-- (b) one transaction inserting every row
CREATE TABLE public.bench_b (
    id bigint PRIMARY KEY,
    k  integer NOT NULL,
    v  text,
    ts timestamptz
);

-- (c) wide rows: 20 columns, one of them an 8-20 kB incompressible text
-- kept out of line (STORAGE EXTERNAL); the updates never touch it
CREATE TABLE public.bench_c (
    id  integer PRIMARY KEY,
    c01 integer, c02 bigint, c03 numeric, c04 text, c05 timestamptz,
    c06 boolean, c07 double precision, c08 text, c09 integer, c10 date,
    c11 text, c12 bigint, c13 numeric, c14 text, c15 integer,
    c16 timestamptz, c17 text, c18 double precision,
    big text
);
ALTER TABLE public.bench_c ALTER COLUMN big SET STORAGE EXTERNAL;

-- (d) mixed: small transactions with one large one in the same backlog
CREATE TABLE public.bench_d (
    id bigint PRIMARY KEY,
    k  integer NOT NULL,
    v  text,
    ts timestamptz
);

-- end-to-end latency probe rows
CREATE TABLE public.bench_lat (
    id  integer PRIMARY KEY,
    t   timestamptz NOT NULL DEFAULT clock_timestamp(),
    pad text
);
