/*-------------------------------------------------------------------------
 * pgrpl_json.h
 *		Remote relations and types, and their values as jsonb.
 *
 * The relation map remembers what RELATION and TYPE messages said about the
 * primary's schema and resolves each column to a local type, so that a
 * tuple's text values can be turned into the jsonb object that to_jsonb()
 * would give on the primary.  It needs catalog access (a transaction) but
 * knows nothing of sockets or of the change-log tables.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_JSON_H
#define PGRPL_JSON_H

#include "fmgr.h"
#include "replication/logicalproto.h"
#include "utils/jsonb.h"

typedef enum PgrplJsonKind
{
	PGRPL_JSON_TEXT,			/* the primary's text output, as a string */
	PGRPL_JSON_BOOL,
	PGRPL_JSON_NUMBER,			/* number, or string for NaN/Infinity */
	PGRPL_JSON_DATETIME,		/* ISO 8601 string, timestamptz in UTC */
	PGRPL_JSON_JSON,			/* json or jsonb value embedded */
	PGRPL_JSON_VIA_TO_JSONB		/* arrays, composites, casts: to_jsonb() */
} PgrplJsonKind;

/*
 * One column of a remote relation.  name, type_name, is_key and remote_typid
 * come from the primary and never change.  The rest is the column's
 * resolution against this server's catalogs: a catalog change it depends on
 * (a type dropped, recreated, renamed, a schema renamed, a cast to json
 * added ...) marks the relation stale, and the next conversion resolves it
 * again, so outside this module only the first four fields are stable.
 */
typedef struct PgrplColumn
{
	char	   *name;

	/*
	 * The column's type as the primary names it, in the relation's context:
	 * a built-in type (same oid on both sides) as format_type_with_typemod()
	 * gives it, e.g. "integer" or "timestamp with time zone"; any other type
	 * schema-qualified (and quoted as needed) from the primary's TYPE
	 * message, e.g. public.mood, whether or not it exists here.  pgoutput
	 * names a domain by its base type (pg_catalog.int4, public.pair) and an
	 * array of a user type by its catalog name (public._mood).  The typmod
	 * is not shown: the server's logicalrep_read_rel() drops it.  A type
	 * known from neither is "unknown type <oid>".
	 */
	char	   *type_name;
	bool		is_key;
	Oid			remote_typid;

	/* resolution, see above */
	Oid			local_typid;	/* base type; InvalidOid if unknown here */
	int32		typmod;
	PgrplJsonKind kind;
	FmgrInfo	infunc;			/* DATETIME and VIA_TO_JSONB */
	Oid			typioparam;
	FmgrInfo	tojsonb;		/* VIA_TO_JSONB */
	/* syscache hash values of the entries the resolution was made from */
	uint32		name_hash;		/* TYPENAMENSP: the type's name looked up */
	uint32		type_hash;		/* TYPEOID: the local type found */
	uint32		infunc_hash;	/* PROCOID: infunc's function */
} PgrplColumn;

typedef struct PgrplRelation
{
	LogicalRepRelId remoteid;	/* hash key */
	char	   *nspname;
	char	   *relname;
	char		replident;
	int			natts;
	int			nkeys;			/* replica identity columns */
	PgrplColumn *cols;
	int		   *json_order;		/* column numbers in jsonb key order */
	bool		json_direct;	/* pairs can be built in that order */
	bool		skip;			/* our own change log on a loopback primary */
	bool		user_types;		/* some column has a non-built-in type */
	bool		stale;			/* resolve the columns again before use */
	MemoryContext cxt;			/* owns everything above but the key */
	MemoryContext typecxt;		/* child of cxt: the current resolution's
								 * FmgrInfo data, reset to resolve again */
} PgrplRelation;

extern void pgrpl_relmap_reset(void);
extern void pgrpl_relmap_set_loopback(bool loopback);
extern void pgrpl_relmap_add_type(LogicalRepTyp *typ);
extern PgrplRelation *pgrpl_relmap_add_relation(LogicalRepRelation *rel);
extern PgrplRelation *pgrpl_relmap_get(LogicalRepRelId remoteid);
extern PgrplRelation *pgrpl_relation_build(LogicalRepRelation *remote,
										   MemoryContext parent);
extern void pgrpl_relation_free(PgrplRelation *rel);
extern bool pgrpl_relation_converts_exactly(PgrplRelation *rel);

extern Jsonb *pgrpl_tuple_to_jsonb(PgrplRelation *rel, LogicalRepTupleData *tup,
								   bool keys_only, ArrayType **unchanged);
extern Jsonb *pgrpl_tuple_key(PgrplRelation *rel, LogicalRepTupleData *tup,
							  LogicalRepTupleData *old);
extern bool pgrpl_jsonb_equal(Jsonb *a, Jsonb *b);

#endif							/* PGRPL_JSON_H */
