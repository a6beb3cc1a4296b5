/* md_sns: placeholder, being written (issue 7). */
#include "md_sns.h"
