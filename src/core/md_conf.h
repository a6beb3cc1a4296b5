/*
 * Configuration: an nginx-like file parsed into an md_conf_t. Directives are
 * table rows (name, contexts, arity, setter, field offset). A reload parses a
 * fresh md_conf_t beside the running one and swaps only when it is valid.
 */
#ifndef MD_CONF_H
#define MD_CONF_H

#include "md_core.h"
#include <sys/socket.h>

#define MD_CONF_MAX_LISTEN 16

typedef struct md_listen_s {
    char text[80]; /* as written after normalisation, e.g. "127.0.0.1:8025" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int backlog;
    int fd; /* -1 until the process module opens it */
} md_listen_t;

/* postgres { } (src/store/md_pg.c owns the directive table). */
typedef struct md_pg_conf_s {
    char *dsn;     /* libpq keyword/value or URI; NULL: no postgres block */
    int pool_size; /* connections per worker */
    double connect_timeout;
    double statement_timeout; /* client-side deadline per statement (and server-side SET) */
    int max_waiting;          /* bound of the per-worker wait queue; over it callers get 503 */
    double reconnect_min, reconnect_max; /* backoff bounds */
    /* Group commit of accepted messages (src/store/md_messages.c): a flush when
     * the window has passed since the first unit waiting, or max_rows wait. */
    double group_commit_window;
    int group_commit_max_rows;
    double analyze_interval; /* src/store/md_analyze.c; 0: off */
} md_pg_conf_t;

/* redis { } (src/store/md_redis.c owns the directive table). */
typedef struct md_redis_conf_s {
    char *address;  /* "IP:PORT" or "unix:/path"; NULL: no redis block */
    char *password; /* AUTH, or NULL */
    int db;
    double connect_timeout;
    double command_timeout;
    int max_pending; /* bound of commands in flight per connection */
    double reconnect_min, reconnect_max;
} md_redis_conf_t;

/*
 * esp NAME { } (src/esp/md_esp.c owns the directive table): one ESP account. The
 * fields of every driver kind live in this one struct (issue 6 adds the real
 * providers' credentials and endpoints beside the sink's dir), so a driver
 * reads its own and ignores the rest.
 */
enum {
    MD_ESP_DRIVER_NONE = 0,
    MD_ESP_DRIVER_SINK = 1,
    MD_ESP_DRIVER_SES = 2,
    MD_ESP_DRIVER_SENDGRID = 3,
    MD_ESP_DRIVER_POSTMARK = 4,
    MD_ESP_DRIVER_MAILGUN = 5,
};

typedef struct md_esp_conf_s {
    char *name; /* the account name: esp NAME { } */
    int driver; /* MD_ESP_DRIVER_*; defaults to NAME when NAME is a driver kind */
    /* sink */
    char *dir;     /* absolute; default <prefix>/var/sink */
    int fsync;     /* flag: fsync each file before its rename (default off) */
    char *journal; /* absolute, or NULL: append "<message id> <attempt>\n" per delivery
                      (tests count deliveries, duplicates included, from it) */
    /* failure injection, for tests: probabilities in 0..1, decided per attempt */
    double fail_transient; /* -> retryable("sink_transient") */
    double fail_permanent; /* -> permanent("sink_rejected") */
    int seed;              /* PRNG seed; 0: from the OS, per worker */
    /* remote providers (ses, sendgrid, postmark, mailgun). Secrets given as
     * NAME_file are read at load (by the master), trailing newline stripped,
     * and stored in the same field as NAME. */
    char *endpoint;          /* "https://host[:port]", no trailing "/"; default: the
                                provider's public API host */
    int rate;                /* messages/s, 0 = unlimited (the router enforces it) */
    int max_connections;     /* keep-alive pool bound of the account's endpoint [8] */
    int tls_verify;          /* flag [on]; off logs a warning at load */
    char *ca_file;           /* PEM bundle, or NULL for the system store */
    double connect_timeout;  /* [5s] */
    double response_timeout; /* [30s] */
    int batch;               /* messages per request for a driver with a batch call [1: off];
                                capped at load to what the provider takes */
    double batch_window;     /* how long a batch waits to fill [2ms] */
    /* ses */
    char *region; /* e.g. "us-east-1"; required */
    char *access_key_id;
    char *secret_access_key;
    char *session_token;     /* optional (temporary credentials) */
    char *configuration_set; /* optional ConfigurationSetName */
    /* sendgrid, mailgun */
    char *api_key;
    /* postmark */
    char *server_token;
    char *message_stream; /* [outbound] */
    /* mailgun */
    char *domain; /* the sending domain: POST /v3/DOMAIN/messages */
} md_esp_conf_t;

typedef struct md_conf_s {
    char *file;   /* absolute path of the main file */
    char *prefix; /* absolute; relative paths in the file resolve against it */

    /* main context */
    int master_process;      /* flag; off runs one worker in the foreground (debugging) */
    int worker_processes;    /* resolved: "auto" becomes the number of online CPUs */
    char *pid_file;          /* absolute path, or NULL for none */
    char *error_log;         /* absolute path, or NULL for stderr */
    int log_level;           /* MD_LOG_* */
    double shutdown_timeout; /* seconds */

    /* http { } */
    md_listen_t listen[MD_CONF_MAX_LISTEN];
    int nlisten;
    char *access_log; /* absolute path, or NULL when off */
    int worker_connections;
    size_t client_max_header_size;
    size_t client_max_body_size;
    double client_header_timeout;
    double client_body_timeout;
    double keepalive_timeout;
    double send_timeout;
    int keepalive_requests;
    int debug_endpoints; /* flag: /debug/echo and /debug/sleep, for tests only */

    /* store and identity */
    md_pg_conf_t postgres;
    md_redis_conf_t redis;
    char *migrations_dir;   /* absolute; default <prefix>/migrations */
    char *admin_token_file; /* file holding the admin token, or NULL */
    char *admin_token;      /* the token itself (e.g. from ${ENV}), or NULL */

    /* delivery: ESP accounts, the dispatcher and the queue (src/esp, md_queue.c) */
    md_esp_conf_t *esp; /* esp NAME { } blocks in file order; NULL when none */
    size_t nesp;
    char *default_esp;                   /* resolved name: the first esp block when not given;
                                            NULL only when there is no esp block */
    int max_attempts;                    /* sends of one message before it fails for good */
    double retry_backoff_base;           /* first retry delay bound; doubles per attempt */
    double retry_backoff_max;            /* cap of the retry delay bound */
    double queue_recovery_interval;      /* sweeper period, and the age before an uncovered
                                            message is put back on the queue */
    double queue_recovery_full;          /* longest time between sweeper turns that read every
                                            waiting message (the others only expired leases) */
    double queue_lease;                  /* a claimed message's lease; also the idle time after
                                            which XAUTOCLAIM takes a dead consumer's entries */
    double max_message_age;              /* a message not sent this long after accept fails */
    double queue_dead_retention;         /* dead-letter entries older than this are cleaned up */
    int dispatch_concurrency;            /* messages one worker's dispatcher holds at once */
    double suppression_cleanup_interval; /* expired suppressions and old soft bounces are
                                            deleted this often (every worker) */
    struct md_route_conf_s *routing;     /* routing { } (src/esp/md_route.c), or NULL */
    struct md_webhooks_conf_s *webhooks; /* webhooks { } (src/store/md_events.c), or NULL */
    struct md_tracking_conf_s *tracking; /* tracking { } (src/mail/md_tracking.c), or NULL */
} md_conf_t;

/*
 * Parses file (relative to the cwd if not absolute) with relative paths inside
 * resolved against prefix (NULL: the cwd). On error returns NULL and writes
 * "FILE:LINE: message" (or "FILE: message" when no line applies) into err.
 * The caller owns the result and frees it with md_conf_free().
 */
md_conf_t *md_conf_load(const char *file, const char *prefix, char *err, size_t errlen);
void md_conf_free(md_conf_t *conf);

/* Parsing helpers shared by setters and tests. Each returns MD_OK or MD_ERROR. */
int md_conf_parse_size(const char *s, size_t *out); /* "512", "16k", "10m", "1g" */
int md_conf_parse_time(const char *s, double *out); /* "30s", "500ms", "1m30s", "2h", "1d", "15" */
int md_conf_parse_listen(const char *s, md_listen_t *ls);

/*
 * Directive tables. A module that adds a block (postgres { }, esp NAME { })
 * adds a struct (embedded in md_conf_t or owned by it), an md_conf_block_t with
 * its table, and one row in the enclosing table; the parser core does not change.
 */

/* Contexts: where a directive may appear. A new block takes the next free bit. */
#define MD_CONF_MAIN  0x0001u
#define MD_CONF_HTTP  0x0002u
#define MD_CONF_PG    0x0004u
#define MD_CONF_REDIS 0x0008u
#define MD_CONF_ESP   0x0010u
#define MD_CONF_ANY   0xffffu

/* Arity and kind (md_conf_cmd_t.type). */
#define MD_CONF_NOARGS 0x0001u
#define MD_CONF_TAKE1  0x0002u
#define MD_CONF_TAKE2  0x0004u
#define MD_CONF_TAKE12 (MD_CONF_TAKE1 | MD_CONF_TAKE2)
#define MD_CONF_1MORE  0x0008u
#define MD_CONF_BLOCK  0x0100u /* followed by { }; extra is the md_conf_block_t */
#define MD_CONF_MULTI  0x0200u /* may appear more than once in one block */

typedef struct md_conf_parser_s md_conf_parser_t; /* opaque: the state of one md_conf_load */
typedef struct md_conf_cmd_s md_conf_cmd_t;

/* A setter reads md_conf_arg(cf, 1..) and stores into base + cmd->offset.
 * Returns MD_OK, or MD_ERROR after md_conf_error(). */
typedef int (*md_conf_set_pt)(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
/* Frees what a setter allocated at base + cmd->offset (md_conf_free calls it). */
typedef void (*md_conf_cleanup_pt)(const md_conf_cmd_t *cmd, void *base);

struct md_conf_cmd_s {
    const char *name; /* NULL ends a table */
    unsigned ctx;     /* MD_CONF_MAIN | MD_CONF_HTTP | ... */
    unsigned type;    /* MD_CONF_TAKE1 | ... */
    md_conf_set_pt set;
    size_t offset;              /* offsetof(the block's struct, field) */
    const void *extra;          /* md_conf_enum_t[], md_conf_bounds_t, md_conf_block_t */
    const char *dflt;           /* arguments applied through set when absent; NULL: none */
    md_conf_cleanup_pt cleanup; /* NULL when set allocates nothing */
};

typedef struct md_conf_block_s {
    const char *name;
    unsigned ctx; /* the context of the directives inside */
    const md_conf_cmd_t *cmds;
} md_conf_block_t;

typedef struct md_conf_enum_s {
    const char *name; /* NULL ends the table */
    int value;
} md_conf_enum_t;

typedef struct md_conf_bounds_s {
    double min, max; /* inclusive; for numbers, sizes (bytes) and times (seconds) */
} md_conf_bounds_t;

/* Generic setters: flag (int on|off), number (int), size (size_t), time (double
 * seconds), str (char *, malloc'd), path (char *, absolute against the prefix),
 * path_or_off (path, "off" gives NULL), enum (int, extra = md_conf_enum_t[]),
 * block (parses { } into base + offset with extra = md_conf_block_t). */
int md_conf_set_flag(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_number(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_size(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_time(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_str(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_path(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
/* A secret: NAME value, or NAME_file PATH (two rows on one char * field) read at
 * load with trailing CR/LF stripped; one line, at most MD_CONF_SECRET_MAX bytes;
 * both forms at once is an error. */
#define MD_CONF_SECRET_MAX 4096
int md_conf_set_secret(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
/* The cleanup of a secret: wipes the bytes, then frees them. */
void md_conf_free_secret(const md_conf_cmd_t *cmd, void *base);
int md_conf_set_path_or_off(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_enum(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
int md_conf_set_block(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
/* Cleanups: free the char * at base + offset; run the cleanups of an embedded block. */
void md_conf_free_str(const md_conf_cmd_t *cmd, void *base);
void md_conf_free_block(const md_conf_cmd_t *cmd, void *base);
/* Runs the cleanups of blk's rows on base: for a custom cleanup freeing a list
 * of block instances (esp NAME { }). */
void md_conf_cleanup(const md_conf_block_t *blk, void *base);

/*
 * Block-parsing entry point for a custom block setter (e.g. esp NAME { }): called
 * after the "{" was read, parses directives of blk into base until the matching
 * "}", then applies blk's defaults. cf's arguments are those of the block's
 * directive again when it returns.
 */
int md_conf_parse_block(md_conf_parser_t *cf, const md_conf_block_t *blk, void *base);

/* Blocks defined by other modules. */
extern const md_conf_block_t md_pg_conf_block;    /* src/store/md_pg.c */
extern const md_conf_block_t md_redis_conf_block; /* src/store/md_redis.c */
/* esp NAME { }: a custom setter appends an account to md_conf_t.esp (names are
 * unique) and parses the block into it; the cleanup frees the whole list. */
extern const md_conf_block_t md_esp_conf_block; /* src/esp/md_esp.c */
int md_esp_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
void md_esp_conf_free(const md_conf_cmd_t *cmd, void *base);
/* routing { } (src/esp/md_route.c, md_route.h): routes, per-tenant routes and
 * the circuit breaker's parameters, into md_conf_t.routing. */
int md_route_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
void md_route_conf_free(const md_conf_cmd_t *cmd, void *base);
/* webhooks { } (src/store/md_events.c, md_events.h): the receivers' secrets and
 * the automatic suppression rule, into md_conf_t.webhooks. */
int md_webhooks_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
void md_webhooks_conf_free(const md_conf_cmd_t *cmd, void *base);
/* tracking { } (src/mail/md_tracking.c, md_tracking.h): public base URL and the
 * token secrets of open/click tracking and unsubscribe links. */
int md_tracking_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
void md_tracking_conf_free(const md_conf_cmd_t *cmd, void *base);

/* The current directive: argument 0 is its name. Valid inside a setter. */
size_t md_conf_nargs(const md_conf_parser_t *cf);
const char *md_conf_arg(const md_conf_parser_t *cf, size_t i);
/* Absolute path of path against the prefix; the caller frees it. */
char *md_conf_full_path(const md_conf_parser_t *cf, const char *path);
/* Records "FILE:LINE: message" for the current directive (the first error wins).
 * Returns MD_ERROR so a setter can `return md_conf_error(...)`. */
int md_conf_error(md_conf_parser_t *cf, const char *fmt, ...) md_printf_like(2, 3);

#endif
