/* md_esp_postmark: placeholder, being written (issue 6). */
#include "md_esp.h"
