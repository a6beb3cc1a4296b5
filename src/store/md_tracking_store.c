#include "md_tracking_store.h"

int
md_tracking_store_app_init(struct md_app_s *app)
{
    md_unused(app);
    return MD_OK;
}

void
md_tracking_store_app_destroy(struct md_app_s *app)
{
    md_unused(app);
}
