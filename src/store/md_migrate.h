/*
 * Schema migrations: `mailerd migrate` applies migrations_dir/NNNN_name.sql in
 * version order, each once, each in its own transaction together with its row in
 * schema_migrations (version, name, SHA-256 checksum, applied_at). A migration
 * that has been applied is never edited: its checksum is compared on every run.
 *
 * This is a foreground command run before (or without) the daemon's loop, so it
 * uses blocking libpq; nothing here may be called from inside a worker's loop
 * except md_migrate_latest_version(), see below.
 */
#ifndef MD_MIGRATE_H
#define MD_MIGRATE_H

#include "md_core.h"
#include "md_conf.h"

/*
 * The `migrate` command. argv[0] is the word "migrate" and the rest are its
 * arguments: none (apply the pending migrations) or "status" (list applied and
 * pending ones, change nothing). Connects with conf->postgres.dsn. Prints
 * progress to stdout and errors to stderr. Returns the process exit code: 0 on
 * success (including "schema is current"), 1 on any failure, 2 on a usage error.
 * conf is not modified or freed.
 */
int md_migrate_main(const md_conf_t *conf, int argc, char **argv);

/*
 * The highest migration version found in dir (0 when it holds none), or -1 when
 * the directory cannot be read or holds a malformed or duplicate migration name.
 * For /ready: compare with SELECT max(version) FROM schema_migrations. It reads
 * the directory (local, small, but still blocking file I/O): call it once per
 * configuration (worker start, reload), not per request. Prints nothing.
 */
int md_migrate_latest_version(const char *dir);

#endif
