/*-------------------------------------------------------------------------
 * pgrpl_json.c
 *		Relation map and text-to-jsonb conversion of replicated values.
 *
 * Goal: a captured value equals to_jsonb() of the column on the primary
 * (with TimeZone UTC).  pgoutput sends each value as the primary's type
 * output text, so most types need no parsing at all: to_jsonb() itself turns
 * them into that very string.  Only the categories to_jsonb() treats
 * specially are converted: bool, numbers, date/time, json(b), and arrays,
 * composites and types with a cast to json, which go through the local
 * input function and the real to_jsonb().  A type unknown here stays text.
 *
 * How a column converts is resolved once per RELATION message and cached.
 * Built-in types never change; the resolution of any other type follows
 * this server's catalogs through syscache invalidation callbacks, which
 * mark the relation stale so that its next conversion resolves it again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_coerce.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/syscache.h"

#include "pgrpl.h"
#include "pgrpl_json.h"

typedef struct PgrplRemoteType
{
	Oid			remoteid;		/* hash key */
	char		nspname[NAMEDATALEN];
	char		typname[NAMEDATALEN];
} PgrplRemoteType;

static HTAB *pgrpl_relmap = NULL;
static HTAB *pgrpl_typmap = NULL;
static MemoryContext pgrpl_relmap_cxt = NULL;
static bool pgrpl_loopback = false;

static void pgrpl_relmap_register_callbacks(void);

/* Forget everything: a new walsender session resends all it needs. */
void
pgrpl_relmap_reset(void)
{
	HASHCTL		ctl;

	if (pgrpl_relmap_cxt == NULL)
	{
		pgrpl_relmap_register_callbacks();
		pgrpl_relmap_cxt = AllocSetContextCreate(TopMemoryContext,
												 "pgrpl relation map",
												 ALLOCSET_DEFAULT_SIZES);
	}
	else
		MemoryContextReset(pgrpl_relmap_cxt);

	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(PgrplRelation);
	ctl.hcxt = pgrpl_relmap_cxt;
	pgrpl_relmap = hash_create("pgrpl relations", 128, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(PgrplRemoteType);
	pgrpl_typmap = hash_create("pgrpl types", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* On a loopback primary our own change-log tables must never be captured. */
void
pgrpl_relmap_set_loopback(bool loopback)
{
	pgrpl_loopback = loopback;
}

void
pgrpl_relmap_add_type(LogicalRepTyp *typ)
{
	PgrplRemoteType *entry;

	if (pgrpl_typmap == NULL)
		pgrpl_relmap_reset();
	entry = hash_search(pgrpl_typmap, &typ->remoteid, HASH_ENTER, NULL);
	strlcpy(entry->nspname, typ->nspname, NAMEDATALEN);
	strlcpy(entry->typname, typ->typname, NAMEDATALEN);
}

/* Built-in types have the same oid on every server and never change. */
#define PGRPL_BUILTIN_TYPE(typid)	((typid) < FirstGenbkiObjectId)

/*
 * The local type for a column's remote type: built-in oids (for which
 * pgoutput sends no TYPE message) are the same everywhere; others are
 * matched by schema-qualified name, whose TYPENAMENSP hash is remembered so
 * that a type created under that name later is noticed.
 */
static Oid
pgrpl_local_type(PgrplColumn *col)
{
	PgrplRemoteType *entry;
	Oid			nspoid;

	if (PGRPL_BUILTIN_TYPE(col->remote_typid))
		return SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(col->remote_typid)) ?
			col->remote_typid : InvalidOid;

	entry = hash_search(pgrpl_typmap, &col->remote_typid, HASH_FIND, NULL);
	if (entry == NULL)
		return InvalidOid;
	/* No such schema (yet): any schema change marks the column stale. */
	nspoid = LookupExplicitNamespace(entry->nspname, true);
	if (!OidIsValid(nspoid))
		return InvalidOid;
	col->name_hash = GetSysCacheHashValue2(TYPENAMENSP,
										   CStringGetDatum(entry->typname),
										   ObjectIdGetDatum(nspoid));
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
						   CStringGetDatum(entry->typname),
						   ObjectIdGetDatum(nspoid));
}

/*
 * The name of a column's type as the primary names it (see PgrplColumn in
 * the header).  It depends on the primary only, not on this server's types.
 */
static char *
pgrpl_type_name(Oid remoteid)
{
	PgrplRemoteType *entry;
	char	   *name;

	if (PGRPL_BUILTIN_TYPE(remoteid))
	{
		name = format_type_extended(remoteid, -1,
									FORMAT_TYPE_TYPEMOD_GIVEN |
									FORMAT_TYPE_INVALID_AS_NULL);
		if (name != NULL)
			return name;
	}
	else if ((entry = hash_search(pgrpl_typmap, &remoteid, HASH_FIND, NULL)) != NULL)
		return quote_qualified_identifier(entry->nspname, entry->typname);
	return psprintf("unknown type %u", remoteid);
}

/* Mirror of to_jsonb()'s categorization of a (base) type. */
static PgrplJsonKind
pgrpl_json_kind(Oid basetype)
{
	Oid			castfunc;

	switch (basetype)
	{
		case BOOLOID:
			return PGRPL_JSON_BOOL;
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			return PGRPL_JSON_NUMBER;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return PGRPL_JSON_DATETIME;
		case JSONOID:
		case JSONBOID:
			return PGRPL_JSON_JSON;
		default:
			break;
	}
	if (OidIsValid(get_element_type(basetype)) || type_is_rowtype(basetype))
		return PGRPL_JSON_VIA_TO_JSONB;
	if (basetype >= FirstNormalObjectId &&
		find_coercion_pathway(JSONOID, basetype, COERCION_EXPLICIT,
							  &castfunc) == COERCION_PATH_FUNC &&
		OidIsValid(castfunc))
		return PGRPL_JSON_VIA_TO_JSONB;
	return PGRPL_JSON_TEXT;
}

/*
 * Resolve how a column's values convert, with FmgrInfo data in "cxt", and
 * remember the hash values of the syscache entries that relied on.
 */
static void
pgrpl_column_resolve(PgrplColumn *col, MemoryContext cxt)
{
	Oid			local;
	Oid			infuncoid;

	col->kind = PGRPL_JSON_TEXT;
	col->local_typid = InvalidOid;
	col->typmod = -1;
	col->name_hash = col->type_hash = col->infunc_hash = 0;
	local = pgrpl_local_type(col);
	if (!OidIsValid(local))
		return;
	col->type_hash = GetSysCacheHashValue1(TYPEOID, ObjectIdGetDatum(local));

	/* to_jsonb() looks through domains; parsing as the base type also
	 * keeps a stricter local domain from rejecting the primary's data. */
	col->local_typid = getBaseTypeAndTypmod(local, &col->typmod);
	col->kind = pgrpl_json_kind(col->local_typid);
	if (col->kind != PGRPL_JSON_DATETIME && col->kind != PGRPL_JSON_VIA_TO_JSONB)
		return;

	getTypeInputInfo(col->local_typid, &infuncoid, &col->typioparam);
	col->infunc_hash = GetSysCacheHashValue1(PROCOID, ObjectIdGetDatum(infuncoid));
	fmgr_info_cxt(infuncoid, &col->infunc, cxt);
	if (col->kind == PGRPL_JSON_VIA_TO_JSONB)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
		Const	   *arg = makeNullConst(col->local_typid, col->typmod, InvalidOid);
		FuncExpr   *call = makeFuncExpr(F_TO_JSONB, JSONBOID, list_make1(arg),
										InvalidOid, InvalidOid,
										COERCE_EXPLICIT_CALL);

		/* to_jsonb(anyelement) reads its argument type from the call. */
		fmgr_info_cxt(F_TO_JSONB, &col->tojsonb, cxt);
		fmgr_info_set_expr((Node *) call, &col->tojsonb);
		MemoryContextSwitchTo(oldcxt);
	}
}

static int
pgrpl_int_cmp(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return (x > y) - (x < y);
}

/* jsonb's order of object keys: shorter first, then bytewise. */
static int
pgrpl_key_order_cmp(const void *a, const void *b, void *arg)
{
	PgrplColumn *cols = (PgrplColumn *) arg;
	const char *na = cols[*(const int *) a].name;
	const char *nb = cols[*(const int *) b].name;
	size_t		la = strlen(na);
	size_t		lb = strlen(nb);

	if (la != lb)
		return la < lb ? -1 : 1;
	return memcmp(na, nb, la);
}

/*
 * Sort the columns once per RELATION message into the order jsonb keeps
 * object keys in, so that a tuple's object can be built as a ready pair
 * array (pgrpl_build_jsonb) instead of through pushJsonbValue, which copies
 * every pair and sorts them again for each row.
 */
static void
pgrpl_relation_json_order(PgrplRelation *rel)
{
	rel->json_order = palloc(sizeof(int) * Max(rel->natts, 1));
	for (int i = 0; i < rel->natts; i++)
		rel->json_order[i] = i;
	qsort_arg(rel->json_order, rel->natts, sizeof(int), pgrpl_key_order_cmp,
			  rel->cols);
}

/*
 * Whether that order can be used, after each resolution: not for relations
 * with duplicate column names (only a hostile primary sends them: jsonb
 * keeps one) or with json/composite values (nested containers need the push
 * path): those keep the generic build.
 */
static void
pgrpl_relation_json_direct(PgrplRelation *rel)
{
	rel->json_direct = true;
	for (int i = 0; i < rel->natts; i++)
	{
		PgrplColumn *col = &rel->cols[rel->json_order[i]];

		if (col->kind == PGRPL_JSON_JSON || col->kind == PGRPL_JSON_VIA_TO_JSONB ||
			(i > 0 && pgrpl_key_order_cmp(&rel->json_order[i - 1],
										  &rel->json_order[i], rel->cols) == 0))
			rel->json_direct = false;
	}
}

/*
 * Resolve every column of "rel" against the current catalogs, replacing
 * what an earlier resolution cached.  Needs a transaction.
 */
static void
pgrpl_relation_resolve(PgrplRelation *rel)
{
	Assert(IsTransactionState());

	/* Cleared first: an invalidation during the lookups marks it again. */
	rel->stale = false;
	MemoryContextReset(rel->typecxt);
	PG_TRY();
	{
		for (int i = 0; i < rel->natts; i++)
			pgrpl_column_resolve(&rel->cols[i], rel->typecxt);
	}
	PG_CATCH();
	{
		/* Columns not reached still point into typecxt: never use them. */
		rel->stale = true;
		PG_RE_THROW();
	}
	PG_END_TRY();
	pgrpl_relation_json_direct(rel);
}

/*
 * Fill "rel" from a RELATION message's description, its memory in a new
 * context under "parent", and resolve it.  Needs a transaction.
 */
static void
pgrpl_relation_init(PgrplRelation *rel, LogicalRepRelation *remote,
					MemoryContext parent)
{
	MemoryContext oldcxt;

	rel->remoteid = remote->remoteid;
	/* pgrpl_relmap_inval skips it until pgrpl_relation_resolve. */
	rel->stale = true;
	rel->cxt = AllocSetContextCreate(parent, "pgrpl relation",
									 ALLOCSET_SMALL_SIZES);
	rel->typecxt = AllocSetContextCreate(rel->cxt, "pgrpl relation types",
										 ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(rel->cxt);
	rel->nspname = pstrdup(remote->nspname);
	rel->relname = pstrdup(remote->relname);
	rel->replident = remote->replident;
	rel->natts = remote->natts;
	rel->cols = palloc0(sizeof(PgrplColumn) * Max(remote->natts, 1));
	rel->skip = pgrpl_loopback && strcmp(rel->nspname, PGRPL_SCHEMA) == 0;
	rel->nkeys = 0;
	rel->user_types = false;
	for (int i = 0; i < remote->natts; i++)
	{
		PgrplColumn *col = &rel->cols[i];

		col->name = pstrdup(remote->attnames[i]);
		col->is_key = bms_is_member(i, remote->attkeys);
		rel->nkeys += col->is_key ? 1 : 0;
		col->remote_typid = remote->atttyps[i];
		rel->user_types |= !PGRPL_BUILTIN_TYPE(col->remote_typid);
	}
	pgrpl_relation_json_order(rel);
	for (int i = 0; i < remote->natts; i++)
		rel->cols[i].type_name = pgrpl_type_name(rel->cols[i].remote_typid);
	MemoryContextSwitchTo(oldcxt);

	pgrpl_relation_resolve(rel);
}

/* Remember a RELATION message.  Needs a transaction for type lookups. */
PgrplRelation *
pgrpl_relmap_add_relation(LogicalRepRelation *remote)
{
	PgrplRelation *rel;
	bool		found;

	if (pgrpl_relmap == NULL)
		pgrpl_relmap_reset();
	rel = hash_search(pgrpl_relmap, &remote->remoteid, HASH_ENTER, &found);
	if (found)
		MemoryContextDelete(rel->cxt);
	pgrpl_relation_init(rel, remote, pgrpl_relmap_cxt);
	return rel;
}

/*
 * A relation described as a RELATION message would, outside the map (no
 * catalog change reaches it: use it within the transaction that built it),
 * for converting rows that did not come through the stream.  Only built-in
 * types: a name in a TYPE message is what the map resolves others by.
 * Needs a transaction; free with pgrpl_relation_free.
 */
PgrplRelation *
pgrpl_relation_build(LogicalRepRelation *remote, MemoryContext parent)
{
	PgrplRelation *rel = MemoryContextAllocZero(parent, sizeof(PgrplRelation));

	if (pgrpl_typmap == NULL)
		pgrpl_relmap_reset();
	pgrpl_relation_init(rel, remote, parent);
	return rel;
}

void
pgrpl_relation_free(PgrplRelation *rel)
{
	MemoryContextDelete(rel->cxt);
	pfree(rel);
}

/*
 * Whether every value of "rel" converts here exactly as to_jsonb() gives it
 * on the primary: built-in types this server has, and no row types (a
 * built-in row type is a system catalog's, which differs between
 * versions).
 */
bool
pgrpl_relation_converts_exactly(PgrplRelation *rel)
{
	if (rel->user_types)
		return false;
	for (int i = 0; i < rel->natts; i++)
	{
		PgrplColumn *col = &rel->cols[i];
		Oid			elem;

		if (!OidIsValid(col->local_typid) || type_is_rowtype(col->local_typid))
			return false;
		elem = get_element_type(col->local_typid);
		if (OidIsValid(elem) && type_is_rowtype(elem))
			return false;
	}
	return true;
}

/*
 * Does the resolution of "col" depend on the syscache entry of "cacheid"
 * with "hashvalue" (0: every entry, after a cache reset)?
 */
static bool
pgrpl_column_depends(PgrplColumn *col, int cacheid, uint32 hashvalue)
{
	if (PGRPL_BUILTIN_TYPE(col->remote_typid))
		return false;
	if (hashvalue == 0)
		return true;
	switch (cacheid)
	{
		case TYPENAMENSP:
			return hashvalue == col->name_hash;
		case TYPEOID:
			return hashvalue == col->type_hash;
		case PROCOID:
			return hashvalue == col->infunc_hash;
		default:
			/* which schema a name resolves in, casts to json: rare */
			return true;
	}
}

/*
 * Syscache invalidation callback: mark the relations whose resolution
 * depended on the changed entry stale.  Only flags: the FmgrInfos may be in
 * use right now, pgrpl_build_jsonb resolves the relation again before its
 * next tuple.
 */
static void
pgrpl_relmap_inval(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS status;
	PgrplRelation *rel;

	if (pgrpl_relmap == NULL)
		return;
	hash_seq_init(&status, pgrpl_relmap);
	while ((rel = hash_seq_search(&status)) != NULL)
	{
		if (!rel->user_types || rel->stale)
			continue;
		for (int i = 0; i < rel->natts && !rel->stale; i++)
			rel->stale = pgrpl_column_depends(&rel->cols[i], cacheid, hashvalue);
	}
}

/*
 * Once per process: the catalog entries a column's resolution reads.  Types
 * by oid and by name, their input functions, casts to json (whether a type
 * converts through to_jsonb) and schemas (a renamed or new schema changes
 * which local type a remote name finds).
 */
static void
pgrpl_relmap_register_callbacks(void)
{
	CacheRegisterSyscacheCallback(TYPEOID, pgrpl_relmap_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPENAMENSP, pgrpl_relmap_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, pgrpl_relmap_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(CASTSOURCETARGET, pgrpl_relmap_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, pgrpl_relmap_inval, (Datum) 0);
}

PgrplRelation *
pgrpl_relmap_get(LogicalRepRelId remoteid)
{
	PgrplRelation *rel = NULL;

	if (pgrpl_relmap != NULL)
		rel = hash_search(pgrpl_relmap, &remoteid, HASH_FIND, NULL);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("change for unknown remote relation %u", remoteid),
				 errdetail("No RELATION message described it on this connection.")));
	return rel;
}

static void
pgrpl_check_ncols(PgrplRelation *rel, LogicalRepTupleData *tup)
{
	if (tup->ncols != rel->natts)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("tuple for relation \"%s.%s\" has %d columns, expected %d",
						rel->nspname, rel->relname, tup->ncols, rel->natts)));
}

static void
pgrpl_string_value(JsonbValue *v, char *s, int len)
{
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = len;
}

static void pgrpl_value_to_jsonb(PgrplColumn *col, StringInfo text, JsonbValue *v);

/* "d" digits at s[from..from+n-1]? */
static bool
pgrpl_digits(const char *s, int from, int n)
{
	for (int i = from; i < from + n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/*
 * The to_jsonb() form of a date/time value the primary sent in ISO style
 * and UTC (see pgrpl_stream_start), by rewriting the text: "YYYY-MM-DD",
 * "YYYY-MM-DD HH:MM:SS[.f]" and the same with "+00", which become
 * "...T...", and "...+00:00".  NULL for anything else (infinity, BC, years
 * past 9999, other offsets): the caller parses those.  Profiling showed
 * timestamp parsing at 5% of the worker on wide rows.
 */
static char *
pgrpl_iso_datetime(Oid typid, StringInfo text)
{
	const char *t = text->data;
	int			len = text->len;
	int			end = len;
	char	   *out;

	if (len < 10 || !pgrpl_digits(t, 0, 4) || t[4] != '-' ||
		!pgrpl_digits(t, 5, 2) || t[7] != '-' || !pgrpl_digits(t, 8, 2))
		return NULL;
	if (typid == DATEOID)
		return len == 10 ? pnstrdup(t, len) : NULL;
	if (typid == TIMESTAMPTZOID)
	{
		if (len < 22 || strcmp(t + len - 3, "+00") != 0)
			return NULL;
		end = len - 3;
	}
	if (end < 19 || t[10] != ' ' || !pgrpl_digits(t, 11, 2) || t[13] != ':' ||
		!pgrpl_digits(t, 14, 2) || t[16] != ':' || !pgrpl_digits(t, 17, 2))
		return NULL;
	if (end > 19 && (t[19] != '.' || end == 20 || !pgrpl_digits(t, 20, end - 20)))
		return NULL;

	out = palloc(len + 4);
	memcpy(out, t, end);
	out[10] = 'T';
	if (typid == TIMESTAMPTZOID)
	{
		memcpy(out + end, "+00:00", 7);
		return out;
	}
	out[end] = '\0';
	return out;
}

/* A non-TOAST column value of a tuple, by its status byte. */
static void
pgrpl_column_value(PgrplRelation *rel, PgrplColumn *col, char status,
				   StringInfo text, JsonbValue *v)
{
	if (status == LOGICALREP_COLUMN_NULL)
		v->type = jbvNull;
	else if (status == LOGICALREP_COLUMN_TEXT)
		pgrpl_value_to_jsonb(col, text, v);
	else
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected binary value for column \"%s\" of relation \"%s.%s\"",
						col->name, rel->nspname, rel->relname),
				 errdetail("pgrpl asks for text values only.")));
}

/*
 * An int2/int4/int8 value straight to numeric: their output is always plain
 * digits, so the generic path (validate as a JSON number, then numeric_in)
 * parses it twice for nothing.  False if the text is not what int8out
 * writes (then the generic path decides).
 */
static bool
pgrpl_integer_value(Oid typid, StringInfo text, JsonbValue *v)
{
	const char *p = text->data;
	bool		neg = false;
	uint64		acc = 0;

	if (typid != INT2OID && typid != INT4OID && typid != INT8OID)
		return false;
	if (*p == '-')
	{
		neg = true;
		p++;
	}
	/* at most 19 digits: no overflow of uint64 */
	if (*p == '\0' || text->len - (p - text->data) > 19)
		return false;
	for (; *p; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		acc = acc * 10 + (*p - '0');
	}
	if (acc > (uint64) PG_INT64_MAX + (neg ? 1 : 0))
		return false;
	v->type = jbvNumeric;
	v->val.numeric = int64_to_numeric(neg ? (int64) (0 - acc) : (int64) acc);
	return true;
}

/* One column value as to_jsonb() would give it; may point into "text". */
static void
pgrpl_value_to_jsonb(PgrplColumn *col, StringInfo text, JsonbValue *v)
{
	Datum		d;

	switch (col->kind)
	{
		case PGRPL_JSON_TEXT:
			pgrpl_string_value(v, text->data, text->len);
			break;
		case PGRPL_JSON_BOOL:
			v->type = jbvBool;
			v->val.boolean = (text->len > 0 && text->data[0] == 't');
			break;
		case PGRPL_JSON_NUMBER:
			if (pgrpl_integer_value(col->local_typid, text, v))
				break;
			if (IsValidJsonNumber(text->data, text->len))
			{
				v->type = jbvNumeric;
				v->val.numeric = DatumGetNumeric(
					DirectFunctionCall3(numeric_in, CStringGetDatum(text->data),
										ObjectIdGetDatum(InvalidOid),
										Int32GetDatum(-1)));
			}
			else
				pgrpl_string_value(v, text->data, text->len);	/* NaN etc. */
			break;
		case PGRPL_JSON_DATETIME:
			{
				char	   *s = pgrpl_iso_datetime(col->local_typid, text);

				if (s == NULL)
				{
					d = InputFunctionCall(&col->infunc, text->data,
										  col->typioparam, col->typmod);
					s = JsonEncodeDateTime(NULL, d, col->local_typid, NULL);
				}
				pgrpl_string_value(v, s, strlen(s));
			}
			break;
		case PGRPL_JSON_JSON:
			d = DirectFunctionCall1(jsonb_in, CStringGetDatum(text->data));
			v->type = jbvBinary;
			v->val.binary.data = &DatumGetJsonbP(d)->root;
			v->val.binary.len = VARSIZE(DatumGetPointer(d)) - VARHDRSZ;
			break;
		case PGRPL_JSON_VIA_TO_JSONB:
			d = InputFunctionCall(&col->infunc, text->data, col->typioparam,
								  col->typmod);
			d = FunctionCall1(&col->tojsonb, d);
			v->type = jbvBinary;
			v->val.binary.data = &DatumGetJsonbP(d)->root;
			v->val.binary.len = VARSIZE(DatumGetPointer(d)) - VARHDRSZ;
			break;
	}
}

/*
 * The names of columns "cols" (numbers, in any order) as a text[] in column
 * order, or NULL for none.  Sorts "cols".
 */
static ArrayType *
pgrpl_column_names(PgrplRelation *rel, int *cols, int ncols)
{
	Datum	   *names;

	if (ncols == 0)
		return NULL;
	qsort(cols, ncols, sizeof(int), pgrpl_int_cmp);
	names = palloc(sizeof(Datum) * ncols);
	for (int n = 0; n < ncols; n++)
		names[n] = CStringGetTextDatum(rel->cols[cols[n]].name);
	return construct_array(names, ncols, TEXTOID, -1, false, TYPALIGN_INT);
}

/* Error context of a tuple's conversion: which column failed. */
typedef struct PgrplConvertState
{
	PgrplRelation *rel;
	int			col;			/* column being converted, or -1 */
} PgrplConvertState;

static void
pgrpl_convert_error_callback(void *arg)
{
	PgrplConvertState *state = (PgrplConvertState *) arg;
	PgrplColumn *col;

	if (state->col < 0)
		return;
	col = &state->rel->cols[state->col];
	errcontext("converting column \"%s\" (type %s) of remote relation \"%s.%s\" to jsonb",
			   col->name, col->type_name, state->rel->nspname, state->rel->relname);
}

/*
 * Build the jsonb object of one tuple.  keys_only keeps just the replica
 * identity columns.  A column sent as unchanged TOAST is taken from
 * "fallback" when that tuple has it; otherwise it is left out and, if
 * "unchanged" is given, its name returned there (NULL when there are none).
 */
static Jsonb *
pgrpl_build_jsonb(PgrplRelation *rel, LogicalRepTupleData *tup, bool keys_only,
				  LogicalRepTupleData *fallback, ArrayType **unchanged)
{
	JsonbParseState *state = NULL;
	JsonbValue	key;
	JsonbValue	val;
	JsonbValue	obj;
	JsonbValue *res;
	int		   *unchanged_cols = NULL;
	int			nunchanged = 0;
	PgrplConvertState convert = {rel, -1};
	ErrorContextCallback errcallback;

	pgrpl_check_ncols(rel, tup);
	if (fallback != NULL)
		pgrpl_check_ncols(rel, fallback);
	/* A catalog change since the last tuple: see pgrpl_relmap_inval. */
	if (unlikely(rel->stale))
		pgrpl_relation_resolve(rel);

	/* Set once per tuple: per value, only the column number changes. */
	errcallback.callback = pgrpl_convert_error_callback;
	errcallback.arg = &convert;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	if (rel->json_direct)
	{
		obj.type = jbvObject;
		obj.val.object.nPairs = 0;
		obj.val.object.pairs = palloc(sizeof(JsonbPair) * Max(rel->natts, 1));
		res = &obj;
	}
	else
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int k = 0; k < rel->natts; k++)
	{
		int			i = rel->json_direct ? rel->json_order[k] : k;
		PgrplColumn *col = &rel->cols[i];
		LogicalRepTupleData *src = tup;

		if (keys_only && !col->is_key)
			continue;
		if (src->colstatus[i] == LOGICALREP_COLUMN_UNCHANGED && fallback != NULL &&
			fallback->colstatus[i] != LOGICALREP_COLUMN_UNCHANGED)
			src = fallback;
		if (src->colstatus[i] == LOGICALREP_COLUMN_UNCHANGED)
		{
			if (unchanged_cols == NULL)
				unchanged_cols = palloc(sizeof(int) * rel->natts);
			unchanged_cols[nunchanged++] = i;
			continue;
		}
		if (rel->json_direct)
		{
			JsonbPair  *pair = &obj.val.object.pairs[obj.val.object.nPairs];

			pgrpl_string_value(&pair->key, col->name, strlen(col->name));
			convert.col = i;
			pgrpl_column_value(rel, col, src->colstatus[i], &src->colvalues[i],
							   &pair->value);
			pair->order = obj.val.object.nPairs++;
			continue;
		}
		convert.col = i;
		pgrpl_string_value(&key, col->name, strlen(col->name));
		pushJsonbValue(&state, WJB_KEY, &key);
		pgrpl_column_value(rel, col, src->colstatus[i], &src->colvalues[i], &val);
		pushJsonbValue(&state, WJB_VALUE, &val);
	}
	error_context_stack = errcallback.previous;
	if (!rel->json_direct)
		res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	if (unchanged != NULL)
		*unchanged = pgrpl_column_names(rel, unchanged_cols, nunchanged);
	return JsonbValueToJsonb(res);
}

/*
 * The jsonb object of one tuple (keys_only: just its replica identity
 * columns).  Unchanged TOASTed values are left out and their column names
 * returned in *unchanged (NULL when there are none).
 */
Jsonb *
pgrpl_tuple_to_jsonb(PgrplRelation *rel, LogicalRepTupleData *tup,
					 bool keys_only, ArrayType **unchanged)
{
	return pgrpl_build_jsonb(rel, tup, keys_only, NULL, unchanged);
}

/*
 * The replica identity of a row, or NULL when the relation has none.  Key
 * columns sent as unchanged TOAST are taken from "old" (the old row of an
 * UPDATE, may be NULL), so a row keeps the same key whether or not an
 * unchanged toasted key column was sent.
 */
Jsonb *
pgrpl_tuple_key(PgrplRelation *rel, LogicalRepTupleData *tup,
				LogicalRepTupleData *old)
{
	if (rel->nkeys == 0)
		return NULL;
	return pgrpl_build_jsonb(rel, tup, true, old, NULL);
}

/* Equal jsonb values: both are built here from the same text, so bytes do. */
bool
pgrpl_jsonb_equal(Jsonb *a, Jsonb *b)
{
	return VARSIZE(a) == VARSIZE(b) && memcmp(a, b, VARSIZE(a)) == 0;
}
