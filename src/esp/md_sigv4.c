/* md_sigv4: placeholder, being written (issue 6). */
#include "md_sigv4.h"
