/*
 * A master and three peers in one process (pthreads), all-reducing and
 * broadcasting, checking every result. Build: cc -std=c99 allreduce_threads.c
 * $(pkg-config --cflags --libs eccl) -lpthread
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep under -std=c99 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eccl/eccl.h"

#define NPEERS 3
#define COUNT 100003

static char gMasterAddress[64];
static int gFailures = 0;
static pthread_mutex_t gLock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char* what, ecclComm_t comm) {
  pthread_mutex_lock(&gLock);
  fprintf(stderr, "FAILED: %s: %s\n", what, ecclGetLastError(comm));
  gFailures++;
  pthread_mutex_unlock(&gLock);
}

#define CHECK(call, comm)       \
  do {                          \
    if ((call) != ecclSuccess) { \
      fail(#call, comm);        \
      return NULL;              \
    }                           \
  } while (0)

/* Members agree (MAX all-reduce) on whether anyone is pending, then update
 * the topology together, until the world has `want` peers. */
static ecclResult_t growWorld(ecclComm_t comm, int want) {
  int world = 0;
  ecclResult_t r;
  for (;;) {
    int32_t pending = 0;
    int p = 0;
    if ((r = ecclCommGetWorldSize(comm, &world)) != ecclSuccess) return r;
    if (world >= want) return ecclSuccess;
    if ((r = ecclCommArePeersPending(comm, &p)) != ecclSuccess) return r;
    pending = p;
    r = ecclAllReduce(&pending, &pending, 1, ecclInt32, ecclMax, NULL, comm, NULL);
    if (r != ecclSuccess) return r;
    if (pending) {
      if ((r = ecclCommUpdateTopology(comm)) != ecclSuccess) return r;
    } else {
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
}

static void* peer(void* arg) {
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  ecclComm_t comm = NULL;
  float* data;
  double value;
  int rank = -1, world = 0, i, root;
  (void)arg;
  cfg.masterAddress = gMasterAddress;
  CHECK(ecclCommCreate(&cfg, &comm), NULL);
  CHECK(ecclCommConnect(comm), comm);
  CHECK(growWorld(comm, NPEERS), comm);
  CHECK(ecclCommGetRank(comm, &rank), comm);
  CHECK(ecclCommGetWorldSize(comm, &world), comm);

  data = malloc(COUNT * sizeof(float));
  for (i = 0; i < COUNT; ++i) data[i] = (float)(rank + 1);
  {
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    CHECK(ecclAllReduce(data, data, COUNT, ecclFloat32, ecclSum, NULL, comm, &info), comm);
    if (info.worldSize != NPEERS) fail("info.worldSize", comm);
  }
  for (i = 0; i < COUNT; ++i) {
    if (data[i] != (float)(NPEERS * (NPEERS + 1) / 2)) {
      fail("all-reduce result", comm);
      break;
    }
  }
  for (root = 0; root < world; ++root) {
    value = rank == root ? 42.5 + root : -1.0;
    CHECK(ecclBroadcast(&value, 1, ecclFloat64, root, NULL, comm, NULL), comm);
    if (value != 42.5 + root) fail("broadcast result", comm);
  }
  {
    /* Asynchronous form on another tag. */
    ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
    ecclRequest_t req = NULL;
    int32_t x = rank;
    opts.tag = 7;
    CHECK(ecclAllReduceAsync(&x, &x, 1, ecclInt32, ecclMax, &opts, comm, &req), comm);
    CHECK(ecclWait(req, NULL), comm);
    if (x != NPEERS - 1) fail("async max", comm);
  }
  free(data);
  CHECK(ecclCommDestroy(comm), NULL);
  return NULL;
}

int main(void) {
  ecclMasterConfig_t mcfg = ECCL_MASTER_CONFIG_INIT;
  ecclMaster_t master = NULL;
  pthread_t threads[NPEERS];
  uint16_t port = 0;
  int i, version = 0;

  ecclGetVersion(&version);
  printf("ECCL %d.%d.%d (library %d)\n", ECCL_VERSION_MAJOR, ECCL_VERSION_MINOR, ECCL_VERSION_PATCH,
         version);
  mcfg.listenAddress = "127.0.0.1";
  if (ecclMasterCreate(&mcfg, &master) != ecclSuccess ||
      ecclMasterGetPort(master, &port) != ecclSuccess) {
    fprintf(stderr, "master: %s\n", ecclGetLastError(NULL));
    return 1;
  }
  snprintf(gMasterAddress, sizeof(gMasterAddress), "127.0.0.1:%u", (unsigned)port);
  for (i = 0; i < NPEERS; ++i) pthread_create(&threads[i], NULL, peer, NULL);
  for (i = 0; i < NPEERS; ++i) pthread_join(threads[i], NULL);
  ecclMasterDestroy(master);
  if (gFailures == 0) printf("all-reduce and broadcast on %d peers: ok\n", NPEERS);
  return gFailures == 0 ? 0 : 1;
}
