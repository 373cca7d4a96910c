# pgrpl — PGXS build.  See README.md for the demo and test commands.
MODULE_big = pgrpl
OBJS = \
	src/pgrpl.o \
	src/pgrpl_shmem.o \
	src/pgrpl_decode.o \
	src/pgrpl_json.o \
	src/pgrpl_keyhash.o \
	src/pgrpl_writer.o \
	src/pgrpl_compress.o \
	src/pgrpl_capture.o \
	src/pgrpl_stream.o \
	src/pgrpl_recvq.o \
	src/pgrpl_snapshot.o \
	src/pgrpl_worker.o \
	src/pgrpl_launcher.o \
	src/pgrpl_catalog.o \
	src/pgrpl_api.o \
	src/pgrpl_jsonout.o \
	src/pgrpl_inspect.o \
	src/pgrpl_preview.o

EXTENSION = pgrpl
DATA = pgrpl--1.0.sql pgrpl--1.0--1.1.sql pgrpl--1.1--2.0.sql pgrpl--2.0--2.1.sql pgrpl--2.1--2.2.sql pgrpl--2.2--2.3.sql
PGFILEDESC = "pgrpl - exactly-once change log of a remote primary's logical stream"

PG_CPPFLAGS = -I$(srcdir)/src -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

REGRESS = setup api_errors dml types replica_identity truncate messages transactions identifiers query keys decode fuzz abuse typecache capture storage streaming twophase origin snapshot xact teardown upgrade
REGRESS_OPTS = --temp-instance=$(abs_builddir)/tmp_check_regress \
	--temp-config=$(srcdir)/test/regress.conf --load-extension=pgrpl

TAP_TESTS = 1

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

abs_builddir ?= $(CURDIR)
