/* md_sigv4: placeholder, being written (issue 6). */
#ifndef MD_SIGV4_H
#define MD_SIGV4_H
#include "md_core.h"
#endif
