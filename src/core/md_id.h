/* Identifiers: UUIDv7 (time-ordered) for requests and, later, messages. */
#ifndef MD_ID_H
#define MD_ID_H

#include "md_core.h"

#define MD_UUID_STRLEN 36

/* Seeds the per-process generator from the OS CSPRNG; call after fork. */
int md_id_init(void);
/* Writes a canonical lowercase UUIDv7 and a NUL into out[MD_UUID_STRLEN + 1]. */
void md_uuid7(char *out);
/* Fills buf with n bytes from getrandom(); MD_OK or MD_ERROR. */
int md_random_bytes(void *buf, size_t n);

#endif
