/* ARM NEON row loops for quant.h's formats (to be written); none yet on any CPU. */
#include "quant.h"

const qisa *tpi_quant_neon(const char *cap) {
    (void)cap;
    return NULL;
}
