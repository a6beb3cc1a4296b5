/*
 * docs/openapi.yaml against the real router: every (method, pattern) the server
 * registers must be an operation of the spec, and every operation of the spec
 * must be a registered route, so neither can drift from the other. The debug
 * routes (under /debug/, only with debug_endpoints on) are left out of the spec on
 * purpose; this checks that too.
 *
 * The spec is read with a minimal line reader, not a YAML parser: under the
 * top-level "paths:" key a path is a key at 2 spaces of indent starting with
 * "/", and its operations are keys at 4 spaces named after an HTTP method.
 * docs/openapi.yaml is written in that block style. When python3 with its yaml
 * module is installed (Debian's python3-yaml), the whole file is also parsed
 * as YAML and every $ref checked to resolve; without it that check is skipped.
 */
#include "md_conf.h"
#include "md_router.h"
#include "tap.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_OPS 256

typedef struct op_s {
    char path[200];
    unsigned method; /* one MD_M_* bit */
    int line;
    int matched;
} op_t;

static const struct {
    const char *name;
    unsigned bit;
} methods[] = {
    {"get", MD_M_GET},     {"head", MD_M_HEAD},     {"post", MD_M_POST},       {"put", MD_M_PUT},
    {"patch", MD_M_PATCH}, {"delete", MD_M_DELETE}, {"options", MD_M_OPTIONS},
};

static const char *
method_name(unsigned bit)
{
    for (size_t i = 0; i < md_nelems(methods); i++)
        if (methods[i].bit == bit)
            return methods[i].name;
    return "?";
}

/* Spaces at the start of line. */
static size_t
indent(const char *line)
{
    size_t n = 0;
    while (line[n] == ' ')
        n++;
    return n;
}

/*
 * The key of a "key:" line starting at s (after the indent), without quotes,
 * into out; false when the line is not a plain mapping key.
 */
static int
line_key(const char *s, char *out, size_t size)
{
    size_t n = 0;
    char q = (*s == '\'' || *s == '"') ? *s++ : 0;
    while (*s && n + 1 < size) {
        if (q ? *s == q : (*s == ':' && (s[1] == '\0' || s[1] == ' ' || s[1] == '\n')))
            break;
        if (!q && (*s == '\n' || *s == '#'))
            return 0;
        out[n++] = *s++;
    }
    out[n] = '\0';
    if (q) {
        if (*s != q)
            return 0;
        s++;
    }
    return n > 0 && *s == ':';
}

/*
 * Reads the operations under "paths:" of file into ops. Returns how many, or
 * -1 when the file cannot be read or has no paths section.
 */
static int
read_spec(const char *file, op_t *ops, int max)
{
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        printf("# %s: %s\n", file, strerror(errno));
        return -1;
    }
    char line[1024], path[200] = "";
    int n = 0, lineno = 0, in_paths = 0, seen_paths = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t ind = indent(line);
        const char *s = line + ind;
        if (*s == '\n' || *s == '\0' || *s == '#')
            continue; /* blank or comment */
        if (ind == 0) {
            in_paths = strncmp(s, "paths:", 6) == 0;
            seen_paths |= in_paths;
            path[0] = '\0';
            continue;
        }
        if (!in_paths)
            continue;
        char key[200];
        if (ind == 2) {
            path[0] = '\0';
            if (line_key(s, key, sizeof(key)) && key[0] == '/')
                snprintf(path, sizeof(path), "%s", key);
            else
                printf("# line %d: not a path key under paths: %s", lineno, line);
        } else if (ind == 4 && path[0] && line_key(s, key, sizeof(key))) {
            for (size_t i = 0; i < md_nelems(methods); i++) {
                if (strcmp(key, methods[i].name) != 0)
                    continue;
                if (n == max) {
                    printf("# more than %d operations\n", max);
                    fclose(f);
                    return -1;
                }
                snprintf(ops[n].path, sizeof(ops[n].path), "%s", path);
                ops[n].method = methods[i].bit;
                ops[n].line = lineno;
                ops[n].matched = 0;
                n++;
            }
        }
    }
    fclose(f);
    if (!seen_paths) {
        printf("# %s has no top-level paths: section\n", file);
        return -1;
    }
    return n;
}

/* The route's declared methods: GET implies HEAD in the router, so HEAD is only
 * checked where it was asked for without GET. */
static unsigned
declared(const md_route_t *rt)
{
    unsigned m = rt->methods;
    if (m & MD_M_GET)
        m &= ~(unsigned)MD_M_HEAD;
    return m;
}

/* A full YAML parse and the $refs, by python3-yaml when it is there. */
static const char yaml_check[] =
    "import sys\n"
    "try:\n"
    "    import yaml\n"
    "except ImportError:\n"
    "    sys.exit(77)\n"
    "d = yaml.safe_load(open(sys.argv[1]))\n"
    "bad = []\n"
    "def walk(x, at):\n"
    "    if isinstance(x, dict):\n"
    "        for k, v in x.items():\n"
    "            if k == '$ref':\n"
    "                y = d\n"
    "                for part in v.lstrip('#/').split('/'):\n"
    "                    y = y.get(part) if isinstance(y, dict) else None\n"
    "                if y is None:\n"
    "                    bad.append(at + ': ' + v)\n"
    "            else:\n"
    "                walk(v, at + '/' + str(k))\n"
    "    elif isinstance(x, list):\n"
    "        for i, v in enumerate(x):\n"
    "            walk(v, at + '/' + str(i))\n"
    "walk(d, '')\n"
    "for p, ops in d['paths'].items():\n"
    "    for m, op in ops.items():\n"
    "        if m != 'parameters' and not op.get('responses'):\n"
    "            bad.append(p + ' ' + m + ': no responses')\n"
    "for b in bad:\n"
    "    print('# ' + b)\n"
    "sys.exit(1 if bad or not str(d.get('openapi', '')).startswith('3.1') else 0)\n";

static void
check_yaml(const char *spec)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("ok %d # skip no /usr/bin/python3\n", ++tap_n);
        return;
    }
    char script[4096];
    snprintf(script, sizeof(script), "/tmp/openapi_t.%ld.py", (long)getpid());
    FILE *f = fopen(script, "w");
    if (f == NULL || fputs(yaml_check, f) < 0 || fclose(f) != 0) {
        ok(0, "write %s: %s", script, strerror(errno));
        return;
    }
    char cmd[8400];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' '%s' 2>&1", script, spec);
    fflush(stdout);
    int rc = system(cmd);
    unlink(script);
    if (rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 77)
        printf("ok %d # skip python3-yaml is not installed\n", ++tap_n);
    else
        ok(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0,
           "the spec is valid YAML, OpenAPI 3.1, every $ref resolves, every operation answers");
}

static md_conf_t *
load_conf(char *tmp)
{
    char file[4096], err[512];
    snprintf(file, sizeof(file), "%s/conf/mailerd.conf", tap_srcdir());
    /* The prefix is a scratch directory: nothing may be created in the source tree. */
    md_conf_t *c = md_conf_load(file, tmp, err, sizeof(err));
    if (c == NULL)
        printf("# %s\n", err);
    return c;
}

int
main(void)
{
    static op_t ops[MAX_OPS];
    char spec[4096], tmp[] = "/tmp/openapi_t.XXXXXX";
    snprintf(spec, sizeof(spec), "%s/docs/openapi.yaml", tap_srcdir());
    if (mkdtemp(tmp) == NULL) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }

    md_conf_t *conf = load_conf(tmp);
    ok(conf != NULL, "the shipped conf/mailerd.conf loads");
    if (conf == NULL) {
        rmdir(tmp);
        return done_testing();
    }
    ok(conf->debug_endpoints == 0, "debug_endpoints is off by default");

    check_yaml(spec);
    int nops = read_spec(spec, ops, MAX_OPS);
    ok(nops > 0, "%s has operations under paths: (%d)", spec, nops);
    if (nops <= 0) {
        md_conf_free(conf);
        rmdir(tmp);
        return done_testing();
    }

    md_router_t *rt = md_router_create();
    md_api_register(rt, conf);
    unsigned nroutes = md_router_count(rt);
    ok(nroutes > 0, "the router has routes (%u)", nroutes);

    /* Every registered (method, pattern) is an operation of the spec. */
    int pairs = 0, missing = 0;
    for (unsigned id = 0; id < nroutes; id++) {
        const md_route_t *r = md_router_get(rt, id);
        unsigned m = declared(r);
        for (size_t i = 0; i < md_nelems(methods); i++) {
            if (!(m & methods[i].bit))
                continue;
            pairs++;
            int found = 0;
            for (int k = 0; k < nops; k++)
                if (ops[k].method == methods[i].bit && strcmp(ops[k].path, r->pattern) == 0) {
                    ops[k].matched = 1;
                    found = 1;
                }
            ok(found, "route %s %s is in the spec", method_name(methods[i].bit), r->pattern);
            missing += !found;
        }
    }

    /* Every operation of the spec is a registered route. */
    int extra = 0;
    for (int k = 0; k < nops; k++) {
        ok(ops[k].matched, "spec operation %s %s (line %d) is a route", method_name(ops[k].method),
           ops[k].path, ops[k].line);
        extra += !ops[k].matched;
    }
    is_int(nops, pairs, "as many spec operations as declared route methods");
    md_router_destroy(rt);

    /* The debug routes exist only with debug_endpoints on, and stay out of the spec. */
    conf->debug_endpoints = 1;
    rt = md_router_create();
    md_api_register(rt, conf);
    int debug_routes = 0;
    for (unsigned id = 0; id < md_router_count(rt); id++)
        if (strncmp(md_router_get(rt, id)->pattern, "/debug/", 7) == 0)
            debug_routes++;
    ok(debug_routes > 0 && md_router_count(rt) == nroutes + (unsigned)debug_routes,
       "debug_endpoints on adds only /debug/ routes (%d)", debug_routes);
    int debug_in_spec = 0;
    for (int k = 0; k < nops; k++)
        debug_in_spec += strncmp(ops[k].path, "/debug/", 7) == 0;
    is_int(debug_in_spec, 0, "no /debug/ route is in the spec");
    md_router_destroy(rt);

    if (missing || extra)
        printf("# %d route(s) missing from the spec, %d spec operation(s) without a route\n",
               missing, extra);
    md_conf_free(conf);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    return done_testing();
}
