/* md_webhook: placeholder, being written (issue 7). */
#include "md_webhook.h"
