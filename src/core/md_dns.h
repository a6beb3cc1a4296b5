/* md_dns: placeholder, being written (issue 6). */
#ifndef MD_DNS_H
#define MD_DNS_H
#include "md_core.h"
#endif
