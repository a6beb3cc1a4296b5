/* md_client: placeholder, being written (issue 6). */
#ifndef MD_CLIENT_H
#define MD_CLIENT_H
#include "md_core.h"
#endif
