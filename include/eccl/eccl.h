/*
 * ECCL - Elastic Collective Communication Library. The whole C99 API.
 *
 * Conventions
 *  - Every function returns ecclResult_t; out-parameters come last.
 *  - Handles are opaque pointers. Config structs begin with `size_t structSize`
 *    and must be initialised with their ECCL_*_INIT macro so that fields added
 *    later get defaults.
 *  - A failed call leaves a message for ecclGetLastError(comm) (per
 *    communicator) and for ecclGetLastError(NULL) (per calling thread).
 *  - Thread safety: functions taking a communicator may be called from any
 *    thread, concurrently: collectives (of different tags, or queued on one
 *    tag), ecclWait/ecclTest on different requests, the getters,
 *    ecclCommArePeersPending and ecclGetLastError. Collectives of one tag
 *    must be issued in the same order on every member (as in NCCL/MPI);
 *    different tags run concurrently. The lifecycle calls ecclCommConnect,
 *    ecclCommUpdateTopology and ecclCommDestroy must not overlap one another
 *    on one communicator: a call that finds another of them running returns
 *    ecclInvalidUsage instead of racing (destroying a communicator while any
 *    other call on it is running, or twice, is undefined). Masters are
 *    independent of communicators; ecclMasterDestroy must not overlap other
 *    calls on the same master.
 *  - Out of memory: a call or a collective that cannot allocate fails with
 *    ecclSystemError (the collective on every member, input restored); no
 *    background thread ever terminates the process.
 *  - No call blocks forever: connects, topology updates and collectives are
 *    bounded by the timeouts in the config.
 *  - Faults: a peer killed, stopped or cut off makes every surviving member's
 *    pending collectives return ecclPeerLost within about the failure timeout
 *    (default 2 s), with the caller's input back in the receive buffer. Call
 *    ecclCommUpdateTopology, then retry. A peer the master declared dead gets
 *    ecclKicked; a lost master gives ecclMasterUnreachable. After either,
 *    ecclCommConnect rejoins as a newcomer.
 */
#ifndef ECCL_ECCL_H_
#define ECCL_ECCL_H_

#include <stddef.h>
#include <stdint.h>

#include "eccl/version.h"

#if defined(_WIN32)
#define ECCL_API
#elif defined(__GNUC__)
#define ECCL_API __attribute__((visibility("default")))
#else
#define ECCL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. The numbers are stable and never reused. */
typedef enum {
  ecclSuccess = 0,
  ecclInvalidArgument = 1,
  ecclInvalidUsage = 2,
  ecclInternalError = 3,
  ecclSystemError = 4,
  ecclTimeout = 5,
  ecclPeerLost = 6,
  ecclTooFewPeers = 7,
  ecclMasterUnreachable = 8,
  ecclAuthFailed = 9,
  ecclVersionMismatch = 10,
  ecclStateMismatch = 11,
  ecclUnsupported = 12,
  ecclInProgress = 13,
  ecclKicked = 14,
  ecclNumResults = 15
} ecclResult_t;

typedef enum {
  ecclInt8 = 0,
  ecclUint8 = 1,
  ecclInt16 = 2,
  ecclUint16 = 3,
  ecclInt32 = 4,
  ecclUint32 = 5,
  ecclInt64 = 6,
  ecclUint64 = 7,
  ecclFloat16 = 8,
  ecclBfloat16 = 9,
  ecclFloat32 = 10,
  ecclFloat64 = 11,
  ecclNumTypes = 12
} ecclDataType_t;

typedef enum {
  ecclSum = 0,
  ecclAvg = 1, /* sum, then one division by the world size (integers truncate) */
  ecclProd = 2,
  ecclMax = 3,
  ecclMin = 4,
  ecclNumOps = 5
} ecclRedOp_t;

typedef enum { ecclMemHost = 0, ecclMemCuda = 1 } ecclMemType_t;

/* Codecs for the payload of a collective (docs/codecs.md). Each hop sends the
 * encoded bytes; receivers decode and reduce in the source precision, and the
 * final value of every element is encoded once, so every member still ends with
 * identical bits. Only for float16, bfloat16, float32 and float64 buffers. */
typedef enum {
  ecclQuantNone = 0,
  ecclQuantFloat16 = 1,  /* IEEE binary16 on the wire: 2 bytes per element */
  ecclQuantBfloat16 = 2, /* bfloat16 on the wire: 2 bytes per element */
  ecclQuantUint8 = 3,    /* 8-bit affine per block (min and max per block) */
  ecclQuantUint4 = 4,    /* 4-bit affine per block, two elements per byte */
  ecclNumQuantizations = 5
} ecclQuantization_t;

/* How a codec rounds. Stochastic rounding is unbiased (the expected decoded
 * value is the input) and deterministic: its random stream is seeded from the
 * epoch, tag, op sequence, ring step and element position, so a rerun of the
 * same ops gives the same bits. */
typedef enum { ecclRoundNearest = 0, ecclRoundStochastic = 1, ecclNumRoundings = 2 } ecclRounding_t;

typedef struct ecclMaster* ecclMaster_t;
typedef struct ecclComm* ecclComm_t;
typedef struct ecclRequest* ecclRequest_t;

/* ---- Errors and version ------------------------------------------------ */

/* Static text for a result: what happened and what to do about it. */
ECCL_API const char* ecclGetErrorString(ecclResult_t result);

/* Message of the last failed call on `comm`; with comm == NULL, of the last
 * failed call on this thread. Never NULL; valid until the next failing call. */
ECCL_API const char* ecclGetLastError(ecclComm_t comm);

/* ECCL_VERSION_CODE of the library actually loaded. */
ECCL_API ecclResult_t ecclGetVersion(int* version);

/* ---- Master (membership manager) --------------------------------------- */

typedef struct {
  size_t structSize;
  const char* listenAddress; /* "0.0.0.0", "::", "127.0.0.1"; NULL = all IPv4 */
  uint16_t port;             /* 0 = any free port, see ecclMasterGetPort */
  const char* authToken;     /* shared secret every peer must prove it knows (HMAC-SHA256
                                challenge-response; it never crosses the wire). NULL = the
                                ECCL_AUTH_TOKEN environment variable; "" = none */
  uint32_t heartbeatIntervalMs; /* interval peers are expected to heartbeat at */
  uint32_t failureTimeoutMs;    /* a peer silent this long is declared dead and removed;
                                   members stuck in a collective this long while all are
                                   alive lose the peer whose data stopped (link cut) */
  /* Fields below were added in 0.2; callers built against 0.1 get their defaults. */
  uint32_t voteTimeoutMs;    /* once one member called ecclCommUpdateTopology, members that
                                have not called it within this are removed (ecclKicked),
                                so one member cannot stall every group's update (default
                                60000: the default opTimeoutMs the others wait for it) */
  int allowUnauthenticated;  /* without a token the master listens only on loopback
                                addresses (ecclInvalidUsage otherwise) unless this is 1 */
  int trustAdvertisedAddresses; /* 1: accept a peer's advertisedAddress even when it is not
                                   the address the master sees it at (NAT); 0: refuse it
                                   (ecclInvalidArgument), so no member can point its
                                   neighbours' data links elsewhere */
  const char* tls;           /* TLS 1.3 on every connection: "off", "psk" (key derived from
                                the auth token) or "cert" (mutual, files below); NULL =
                                ECCL_TLS (default off). Peers must use the same mode */
  const char* tlsCertFile;   /* PEM certificate chain for "cert"; NULL = ECCL_TLS_CERT */
  const char* tlsKeyFile;    /* PEM private key for "cert"; NULL = ECCL_TLS_KEY */
  const char* tlsCaFile;     /* PEM CA bundle peers' certificates must chain to; NULL =
                                ECCL_TLS_CA */
} ecclMasterConfig_t;

#define ECCL_MASTER_CONFIG_INIT \
  { sizeof(ecclMasterConfig_t), NULL, 0, NULL, 500, 2000, 60000, 0, 0, NULL, NULL, NULL, NULL }

/* Starts a master in this process, serving on a background thread. Fails with
 * ecclInvalidUsage when asked to listen on a non-loopback address without a
 * token (see allowUnauthenticated), ecclSystemError when it cannot listen. */
ECCL_API ecclResult_t ecclMasterCreate(const ecclMasterConfig_t* config,
                                       ecclMaster_t* master);
ECCL_API ecclResult_t ecclMasterGetPort(ecclMaster_t master, uint16_t* port);
/* Stops serving; connected peers see ecclMasterUnreachable. NULL is a no-op. */
ECCL_API ecclResult_t ecclMasterDestroy(ecclMaster_t master);

/* ---- Communicator ------------------------------------------------------ */

typedef struct {
  size_t structSize;
  const char* masterAddress; /* "host:port", "[v6]:port" (required) */
  uint32_t peerGroup;        /* collectives are scoped to a peer group */
  const char* transport;     /* "tcp" (NULL = "tcp") */
  uint32_t streamsPerPeer;   /* parallel streams per neighbour link; 0 = ECCL_STREAMS, whose
                                default lets each link find its count (2 .. 32) */
  const char* authToken;     /* must equal the master's; NULL = ECCL_AUTH_TOKEN */
  uint32_t connectTimeoutMs; /* registering with the master */
  uint32_t opTimeoutMs;      /* a topology update or collective making no progress;
                                also, once one member finished a collective, how long
                                the master waits for the others (even ones that have
                                not called it yet) before failing it with ecclTimeout
                                on every member */
  const char* advertisedAddress; /* address others dial for data links; NULL = the
                                    address the master sees this peer at. The master
                                    refuses any other unless it trusts advertised
                                    addresses (NAT) */
  const char* bindAddress;   /* local address the data acceptor binds and links (and the
                                master connection) leave from; NULL = the local address
                                used to reach the master */
  uint32_t heartbeatIntervalMs; /* heartbeats to the master; keep below the master's
                                   failureTimeoutMs */
  uint32_t failureTimeoutMs; /* no bytes from a neighbour for half of this: reported to
                                the master; no word from the master for this long:
                                ecclMasterUnreachable. Use the master's value. */
  /* Fields below were added in 0.2. */
  const char* tls;           /* "off", "psk" or "cert": must match the master's and the other
                                peers' (control and data connections); NULL = ECCL_TLS */
  const char* tlsCertFile;   /* for "cert"; NULL = ECCL_TLS_CERT */
  const char* tlsKeyFile;    /* for "cert"; NULL = ECCL_TLS_KEY */
  const char* tlsCaFile;     /* for "cert"; NULL = ECCL_TLS_CA */
} ecclCommConfig_t;

#define ECCL_COMM_CONFIG_INIT \
  { sizeof(ecclCommConfig_t), NULL, 0, NULL, 0, NULL, 10000, 60000, NULL, NULL, 500, 2000, \
    NULL, NULL, NULL, NULL }

/* Creates a communicator; nothing is contacted yet. */
ECCL_API ecclResult_t ecclCommCreate(const ecclCommConfig_t* config, ecclComm_t* comm);

/* Registers with the master and blocks until admitted: at once when the world
 * is empty, else at the members' next ecclCommUpdateTopology. Fails with
 * ecclMasterUnreachable within connectTimeoutMs, ecclVersionMismatch,
 * ecclAuthFailed; with ecclPeerLost or ecclTimeout when the data links to its
 * ring neighbours cannot be opened (a neighbour died meanwhile: retry). A
 * failed call leaves the master again. After a call returned ecclKicked or
 * ecclMasterUnreachable (and with no collective in flight) it starts over as
 * a newcomer. ecclInvalidUsage while ecclCommUpdateTopology or another
 * ecclCommConnect runs on this communicator. */
ECCL_API ecclResult_t ecclCommConnect(ecclComm_t comm);

/* Collective over all members of all peer groups: admits pending peers,
 * drops dead ones, starts a new epoch with a new ring when the membership
 * changed, and returns once this peer's data links for that epoch are up
 * (ecclPeerLost if a neighbour died meanwhile: call it again). No collective
 * of this communicator may be in flight, and no ecclCommConnect or other
 * ecclCommUpdateTopology may be running on it (ecclInvalidUsage). A member
 * that has not called it voteTimeoutMs (master config) after the first
 * member did is removed (its calls return ecclKicked). */
ECCL_API ecclResult_t ecclCommUpdateTopology(ecclComm_t comm);

/* ecclCommUpdateTopology that first measures bandwidths and reorders each
 * peer group's ring for them (docs/topology.md). Collective over all members
 * of all groups, like the update (a member calling ecclCommUpdateTopology
 * meanwhile takes part too). Each group of at most 256 members measures the
 * pairs the master's matrix lacks: rounds of disjoint pairs, each partner
 * sending to the other for ECCL_PROBE_MS (master side, default 1000 ms),
 * at most n rounds for n members, over links authenticated like any data
 * link. The master keeps the matrix by address (a peer that rejoins from the
 * same host reuses it; with ECCL_LOG_LEVEL=info it logs the matrix and the
 * ring), then picks the ring with the fastest slowest hop (then the most
 * total bandwidth): exact up to 9 members, a bounded search beyond. Members
 * that cannot reach each other are not made neighbours where any ring
 * avoids it. A changed ring takes effect as a new epoch, links rewired; pending
 * peers are admitted at the end of the ring. A member lost while probing
 * fails the call on every member with ecclPeerLost (call it again: pairs
 * already measured are kept); ecclInvalidUsage for a group of more than 256. */
ECCL_API ecclResult_t ecclCommOptimizeTopology(ecclComm_t comm);

/* Whether a newcomer is waiting to be admitted (one master round-trip). */
ECCL_API ecclResult_t ecclCommArePeersPending(ecclComm_t comm, int* pending);

ECCL_API ecclResult_t ecclCommGetWorldSize(ecclComm_t comm, int* worldSize);
ECCL_API ecclResult_t ecclCommGetRank(ecclComm_t comm, int* rank);
ECCL_API ecclResult_t ecclCommGetEpoch(ecclComm_t comm, uint64_t* epoch);
ECCL_API ecclResult_t ecclCommGetPeerGroup(ecclComm_t comm, uint32_t* peerGroup);

/* Leaves the group and frees the communicator; waits for in-flight requests
 * up to opTimeoutMs. NULL is a no-op. Requests must not be used afterwards.
 * ecclInvalidUsage (and nothing freed) while ecclCommConnect or
 * ecclCommUpdateTopology runs on it in another thread. */
ECCL_API ecclResult_t ecclCommDestroy(ecclComm_t comm);

/* ---- Collectives ------------------------------------------------------- */

typedef struct {
  size_t structSize;
  uint32_t tag;                    /* ops of one tag run in issue order */
  ecclQuantization_t quantization; /* payload codec; every member must use the same one
                                      for an op (ecclInvalidUsage on all otherwise) */
  ecclMemType_t memType;           /* ecclMemCuda: the buffers are CUDA device memory,
                                      staged through pinned host memory (docs/cuda.md);
                                      ecclUnsupported where CUDA is not available */
  void* cudaStream;                /* ecclMemCuda: a cudaStream_t; the op reads its input
                                      after the work enqueued on it before the call. NULL
                                      = the legacy default stream */
  /* Fields below were added in 0.2. */
  ecclRounding_t rounding;         /* for a codec: nearest (ties to even for float16 and
                                      bfloat16) or stochastic */
  uint32_t quantBlockSize;         /* elements per min/max block of ecclQuantUint8 and
                                      ecclQuantUint4: a multiple of 8 from 8 to 32768;
                                      0 = 256. Ignored by the other codecs */
} ecclOpOptions_t;

#define ECCL_OP_OPTIONS_INIT \
  { sizeof(ecclOpOptions_t), 0, ecclQuantNone, ecclMemHost, NULL, ecclRoundNearest, 0 }

typedef struct {
  size_t structSize;
  uint64_t bytesSent;     /* bytes this member put on the wire (payload, encoded) */
  uint64_t bytesReceived; /* bytes this member took off the wire (payload, encoded) */
  int worldSize;
  uint64_t epoch;
  double seconds;
  /* Fields below were added in 0.2. */
  uint64_t logicalBytesSent;     /* what bytesSent would be without a codec */
  uint64_t logicalBytesReceived; /* what bytesReceived would be without a codec */
  uint32_t streams; /* TCP streams this member's outgoing link sent on when the op ended
                       (the count an adaptive link chose; 0 when it sent nothing) */
  /* Fields below were added in 0.3. */
  uint32_t sharedMemory; /* 1 when this member's outgoing link moved the op's bytes through
                            shared memory (a peer on the same host, ECCL_SHM), else 0 */
} ecclOpInfo_t;

#define ECCL_OP_INFO_INIT { sizeof(ecclOpInfo_t), 0, 0, 0, 0, 0.0, 0, 0, 0, 0 }

/* Ring all-reduce of `count` elements of `sendbuf` into `recvbuf` on every
 * member of the peer group; sendbuf == recvbuf is allowed. opts and info may
 * be NULL. Succeeds only when every member finished the op with identical
 * bits. Members disagreeing on count/dtype/op for one tag all get
 * ecclInvalidUsage. All or nothing: on any failure (ecclPeerLost when a
 * member died) every member fails it and recvbuf holds the input again
 * (sendbuf's contents; in place: the buffer as it was). In-place calls keep
 * a copy of the buffer for that, per tag. */
ECCL_API ecclResult_t ecclAllReduce(const void* sendbuf, void* recvbuf, size_t count,
                                    ecclDataType_t dtype, ecclRedOp_t op,
                                    const ecclOpOptions_t* opts, ecclComm_t comm,
                                    ecclOpInfo_t* info);

/* Copies `count` elements of `buf` on rank `root` (of the current epoch)
 * into `buf` on every other member of the peer group. On failure every
 * member's `buf` holds what it held before the call. */
ECCL_API ecclResult_t ecclBroadcast(void* buf, size_t count, ecclDataType_t dtype, int root,
                                    const ecclOpOptions_t* opts, ecclComm_t comm,
                                    ecclOpInfo_t* info);

/* Asynchronous forms: the buffers must stay valid until ecclWait returns or
 * ecclTest reports done. Every request must be finished with ecclWait, which
 * frees it. */
ECCL_API ecclResult_t ecclAllReduceAsync(const void* sendbuf, void* recvbuf, size_t count,
                                         ecclDataType_t dtype, ecclRedOp_t op,
                                         const ecclOpOptions_t* opts, ecclComm_t comm,
                                         ecclRequest_t* request);
ECCL_API ecclResult_t ecclBroadcastAsync(void* buf, size_t count, ecclDataType_t dtype,
                                         int root, const ecclOpOptions_t* opts,
                                         ecclComm_t comm, ecclRequest_t* request);

/* Blocks until the request finishes, returns its result and frees it. */
ECCL_API ecclResult_t ecclWait(ecclRequest_t request, ecclOpInfo_t* info);

/* Sets *done to 1 when ecclWait would not block. Never blocks. */
ECCL_API ecclResult_t ecclTest(ecclRequest_t request, int* done);

/* ---- Shared state (docs/state.md) -------------------------------------- */

typedef enum {
  ecclSyncEnforcePopular = 0, /* take the elected content if ours differs; serve it */
  ecclSyncReceiveOnly = 1,    /* never serve, never vote; take the elected content */
  ecclSyncSendOnly = 2,       /* never receive: ecclStateMismatch if our content lost */
  ecclNumSyncStrategies = 3
} ecclSyncStrategy_t;

/* One named tensor of the shared state. Names are unique within a state, at
 * most 256 bytes. allowDivergence: never compared, never transferred. */
typedef struct {
  const char* name;
  void* data;
  size_t count;
  ecclDataType_t dtype;
  ecclMemType_t memType; /* ecclMemHost, or ecclMemCuda: device memory, synced through
                            pinned host copies, read and written on the device's legacy
                            default stream (docs/cuda.md) */
  int allowDivergence;
} ecclTensorInfo_t;

typedef struct {
  size_t structSize;
  uint64_t revision;         /* +1 per sync; a peer's first sync may start anywhere */
  ecclTensorInfo_t* tensors;
  size_t tensorCount;
} ecclSharedState_t;

#define ECCL_SHARED_STATE_INIT { sizeof(ecclSharedState_t), 0, NULL, 0 }

#define ECCL_SYNC_MAX_SOURCES 16

typedef struct {
  size_t structSize;
  uint64_t bytesSent;
  uint64_t bytesReceived;
  uint64_t revision;          /* the group's revision after the sync */
  uint32_t tensorsFetched;
  uint32_t sourcesUsed;       /* peers this one received from */
  uint32_t sourcesLost;       /* of those, how many broke off mid-transfer (the others
                                 finished their chunks) */
  uint64_t sourcePeers[ECCL_SYNC_MAX_SOURCES];     /* their peer ids ... */
  uint64_t bytesFromSource[ECCL_SYNC_MAX_SOURCES]; /* ... and what each sent */
  double seconds;
} ecclSyncInfo_t;

#define ECCL_SYNC_INFO_INIT { sizeof(ecclSyncInfo_t), 0, 0, 0, 0, 0, 0, {0}, {0}, 0.0 }

/* Collective of the peer group: afterwards every member's non-divergent
 * tensors hold the elected content (the most common among the members at the
 * newest revision; a tie goes to a fixed choice) and state->revision is the
 * group's. Members whose tensors differ fetch just those, striped across up
 * to 4 up-to-date members, and check each one's 64-bit hash. Fails with
 * ecclStateMismatch (nothing of this member's state is touched) when its
 * revision is not its last sync's + 1 (a first sync may give any), when its
 * tensor names, dtypes or counts differ from the elected state's (the message
 * names the tensor), or when it is send-only and its content lost; with
 * ecclPeerLost when every source died mid-transfer: then the revision stays,
 * and tensors being fetched may hold a mix of old and new bytes until the
 * next sync repairs them. info may be NULL. */
ECCL_API ecclResult_t ecclSharedStateSync(ecclComm_t comm, ecclSharedState_t* state,
                                          ecclSyncStrategy_t strategy, ecclSyncInfo_t* info);

#ifdef __cplusplus
}
#endif

#endif /* ECCL_ECCL_H_ */
