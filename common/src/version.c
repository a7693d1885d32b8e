#include "asyncq/version.h"

const char *aq_version(void)
{
    return ASYNCQ_VERSION;
}
