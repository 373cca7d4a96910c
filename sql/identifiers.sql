--
-- identifiers: schema, table, column, publication and subscription names
-- that need quoting travel unharmed.
--
\set VERBOSITY terse

CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Tab ""Quoted"" Name" (
    "Id" int PRIMARY KEY,
    "Col Name" text,
    "a""b" int,
    "UPPER" bool,
    "select" text,
    "ünïcode" text
);
CREATE TABLE "My Schema".lower_case (id int PRIMARY KEY);
CREATE TABLE public."My Schema.lower_case" (id int PRIMARY KEY);
-- A publication whose name holds a comma, spaces and both kinds of quote.
CREATE PUBLICATION "ident pub, ""one"" 'x'"
    FOR TABLE "My Schema"."Tab ""Quoted"" Name", "My Schema".lower_case;
CREATE PUBLICATION "Ident Pub 2" FOR TABLE public."My Schema.lower_case";
SELECT pubname FROM pg_publication WHERE pubname LIKE '%dent%' ORDER BY 1;

-- A subscription name that is no valid slot name needs slot_name.
SELECT pgrpl.create_subscription('Ident Sub "1", ''x''', public.loopback_conninfo(),
                                 ARRAY['ident pub, "one" ''x''', 'Ident Pub 2'],
                                 slot_name => 'ident_slot', copy_data => false) IS NOT NULL AS created;
SELECT name, slot_name, publications FROM pgrpl.subscriptions;
SELECT slot_name FROM pg_replication_slots;

INSERT INTO "My Schema"."Tab ""Quoted"" Name"
VALUES (1, 'one', 1, true, 'keyword', 'ü'), (2, NULL, NULL, NULL, NULL, NULL);
UPDATE "My Schema"."Tab ""Quoted"" Name" SET "Col Name" = 'uno', "a""b" = 11 WHERE "Id" = 1;
UPDATE "My Schema"."Tab ""Quoted"" Name" SET "Id" = 3 WHERE "Id" = 2;
DELETE FROM "My Schema"."Tab ""Quoted"" Name" WHERE "Id" = 1;
INSERT INTO "My Schema".lower_case VALUES (1);
INSERT INTO public."My Schema.lower_case" VALUES (2);
TRUNCATE "My Schema"."Tab ""Quoted"" Name", "My Schema".lower_case,
    public."My Schema.lower_case";
SELECT public.wait_sub('Ident Sub "1", ''x''');

SELECT * FROM public.captured('Ident Sub "1", ''x''');
-- The names are stored as they are, unquoted.
SELECT DISTINCT schema_name, table_name, quote_ident(schema_name) || '.' || quote_ident(table_name) AS quoted
  FROM pgrpl.changes('Ident Sub "1", ''x''') ORDER BY 1, 2;
SELECT DISTINCT k AS column_name
  FROM pgrpl.changes('Ident Sub "1", ''x''') c, jsonb_object_keys(coalesce(c.new, c.old)) k
 ORDER BY 1;

-- alter_subscription with the odd publication name alone.
SELECT pgrpl.disable_subscription('Ident Sub "1", ''x''');
SELECT public.wait_stopped('Ident Sub "1", ''x''');
SELECT pgrpl.alter_subscription('Ident Sub "1", ''x''',
                                publications => ARRAY['ident pub, "one" ''x''']);
SELECT pgrpl.enable_subscription('Ident Sub "1", ''x''');
INSERT INTO "My Schema".lower_case VALUES (10);
INSERT INTO public."My Schema.lower_case" VALUES (20);
SELECT public.wait_sub('Ident Sub "1", ''x''');
SELECT name, publications FROM pgrpl.subscriptions;
SELECT name, state, last_error FROM pgrpl.stat_subscription;
SELECT op, schema_name, table_name, new FROM pgrpl.changes('Ident Sub "1", ''x''')
 WHERE (new->>'id')::int >= 10 ORDER BY commit_lsn, seq;

-- The error about a missing publication quotes its name as needed.
SELECT public.create_sub('ident_missing', ARRAY['No Such, "Pub"', 'nosuchpub']);

SELECT pgrpl.drop_subscription('Ident Sub "1", ''x''');
SELECT slot_name FROM pg_replication_slots;
DROP PUBLICATION "ident pub, ""one"" 'x'", "Ident Pub 2";
DROP SCHEMA "My Schema" CASCADE;
DROP TABLE public."My Schema.lower_case";
