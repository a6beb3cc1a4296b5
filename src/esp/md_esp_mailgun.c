/* md_esp_mailgun: placeholder, being written (issue 6). */
#include "md_esp.h"
