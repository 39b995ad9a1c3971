/* The public header must compile as strict C99 with every warning an error. */
#include "eccl/eccl.h"

int eccl_header_compiles(void) {
  ecclMasterConfig_t m = ECCL_MASTER_CONFIG_INIT;
  ecclCommConfig_t c = ECCL_COMM_CONFIG_INIT;
  ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
  ecclOpInfo_t i = ECCL_OP_INFO_INIT;
  return (int)(m.structSize + c.structSize + o.structSize + i.structSize) + ECCL_VERSION_CODE;
}
