/* Links against an installed ECCL and runs a one-peer world. */
#include <stdio.h>

#include "eccl/eccl.h"

int main(void) {
  ecclMasterConfig_t mc = ECCL_MASTER_CONFIG_INIT;
  ecclCommConfig_t cc = ECCL_COMM_CONFIG_INIT;
  ecclMaster_t master = NULL;
  ecclComm_t comm = NULL;
  uint16_t port = 0;
  char addr[32];
  float x[2] = {1.5f, 2.5f};
  mc.listenAddress = "127.0.0.1";
  if (ecclMasterCreate(&mc, &master) || ecclMasterGetPort(master, &port)) return 1;
  snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
  cc.masterAddress = addr;
  if (ecclCommCreate(&cc, &comm) || ecclCommConnect(comm) ||
      ecclAllReduce(x, x, 2, ecclFloat32, ecclSum, NULL, comm, NULL)) {
    fprintf(stderr, "%s\n", ecclGetLastError(comm));
    return 1;
  }
  ecclCommDestroy(comm);
  ecclMasterDestroy(master);
  printf("consumer ok: %.1f %.1f\n", x[0], x[1]);
  return x[1] == 2.5f ? 0 : 1;
}
