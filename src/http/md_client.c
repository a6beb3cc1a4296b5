/* md_client: placeholder, being written (issue 6). */
#include "md_client.h"
