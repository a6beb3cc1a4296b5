/* md_dns: placeholder, being written (issue 6). */
#include "md_dns.h"
