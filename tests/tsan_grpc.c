/* ThreadSanitizer's view of gRPC's hand-offs. Linked into every program of
 * a -DPSTRAIN_SANITIZE=thread build only: CMakeLists.txt adds it to
 * pstrain_rpc and has the linker route the calls below through it (--wrap).
 *
 * Why: Debian's gRPC is not built with -fsanitize=thread, and its
 * completion queues order memory with atomics and futexes that TSan cannot
 * see. pstrain fills a call object in one thread, hands its tag to
 * grpc_call_start_batch, and the tag comes back from
 * grpc_completion_queue_next in the server's thread: TSan, blind to the
 * queue, reports every such hand-off as a race between two pstrain
 * functions. gRPC's contract is that starting an operation happens before
 * its event is returned, and that a slice's destroy function runs after
 * the last grpc_slice_unref; a release before each hand-off and an acquire
 * where gRPC hands back (a completion, a destroy function) say exactly
 * that. They use one address for all hand-offs: a slice is made in one
 * place and given up in another (a batch, an unref of a pooled blob), and
 * one address orders both without knowing which slice a batch carries.
 * This is gRPC's contract written down for TSan, not a suppression:
 * pstrain's own accesses between two hand-offs are checked as they are.
 * (common/rpc also marks its hand-offs, RPC_HANDOFF_*; the two agree.) */
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <sanitizer/tsan_interface.h>
#include <stdlib.h>

#include "common/base/util.h"

/* The address every hand-off to gRPC releases and every return acquires. */
static char grpc_order;
#define HANDOFF_OUT() __tsan_release(&grpc_order)
#define HANDOFF_IN() __tsan_acquire(&grpc_order)

grpc_call_error __real_grpc_call_start_batch(grpc_call *call, const grpc_op *ops, size_t nops,
                                             void *tag, void *reserved);
grpc_call_error __real_grpc_server_request_call(grpc_server *server, grpc_call **call,
                                                grpc_call_details *details,
                                                grpc_metadata_array *request_md,
                                                grpc_completion_queue *cq_bound,
                                                grpc_completion_queue *cq_notify, void *tag);
void __real_grpc_server_shutdown_and_notify(grpc_server *server, grpc_completion_queue *cq,
                                            void *tag);
grpc_event __real_grpc_completion_queue_next(grpc_completion_queue *cq, gpr_timespec deadline,
                                             void *reserved);
grpc_event __real_grpc_completion_queue_pluck(grpc_completion_queue *cq, void *tag,
                                              gpr_timespec deadline, void *reserved);
grpc_slice __real_grpc_slice_new_with_user_data(void *p, size_t len, void (*destroy)(void *),
                                                void *user_data);
void __real_grpc_slice_unref(grpc_slice s);

grpc_call_error __wrap_grpc_call_start_batch(grpc_call *call, const grpc_op *ops, size_t nops,
                                             void *tag, void *reserved);
grpc_call_error __wrap_grpc_server_request_call(grpc_server *server, grpc_call **call,
                                                grpc_call_details *details,
                                                grpc_metadata_array *request_md,
                                                grpc_completion_queue *cq_bound,
                                                grpc_completion_queue *cq_notify, void *tag);
void __wrap_grpc_server_shutdown_and_notify(grpc_server *server, grpc_completion_queue *cq,
                                            void *tag);
grpc_event __wrap_grpc_completion_queue_next(grpc_completion_queue *cq, gpr_timespec deadline,
                                             void *reserved);
grpc_event __wrap_grpc_completion_queue_pluck(grpc_completion_queue *cq, void *tag,
                                              gpr_timespec deadline, void *reserved);
grpc_slice __wrap_grpc_slice_new_with_user_data(void *p, size_t len, void (*destroy)(void *),
                                                void *user_data);
void __wrap_grpc_slice_unref(grpc_slice s);

grpc_call_error __wrap_grpc_call_start_batch(grpc_call *call, const grpc_op *ops, size_t nops,
                                             void *tag, void *reserved) {
    HANDOFF_OUT();
    return __real_grpc_call_start_batch(call, ops, nops, tag, reserved);
}

grpc_call_error __wrap_grpc_server_request_call(grpc_server *server, grpc_call **call,
                                                grpc_call_details *details,
                                                grpc_metadata_array *request_md,
                                                grpc_completion_queue *cq_bound,
                                                grpc_completion_queue *cq_notify, void *tag) {
    HANDOFF_OUT();
    return __real_grpc_server_request_call(server, call, details, request_md, cq_bound, cq_notify,
                                           tag);
}

void __wrap_grpc_server_shutdown_and_notify(grpc_server *server, grpc_completion_queue *cq,
                                            void *tag) {
    HANDOFF_OUT();
    __real_grpc_server_shutdown_and_notify(server, cq, tag);
}

/* What gRPC wrote for the operation (a received message, a status) it
 * wrote in uninstrumented code, which TSan does not check either way. */
grpc_event __wrap_grpc_completion_queue_next(grpc_completion_queue *cq, gpr_timespec deadline,
                                             void *reserved) {
    grpc_event ev = __real_grpc_completion_queue_next(cq, deadline, reserved);
    if (ev.type == GRPC_OP_COMPLETE)
        HANDOFF_IN();
    return ev;
}

grpc_event __wrap_grpc_completion_queue_pluck(grpc_completion_queue *cq, void *tag,
                                              gpr_timespec deadline, void *reserved) {
    grpc_event ev = __real_grpc_completion_queue_pluck(cq, tag, deadline, reserved);
    if (ev.type == GRPC_OP_COMPLETE)
        HANDOFF_IN();
    return ev;
}

/* A slice's destroy function runs on whichever thread drops the last
 * reference, often one of gRPC's: it goes through a trampoline that
 * acquires what every unref released. */
typedef struct {
    void (*destroy)(void *);
    void *user_data;
} slice_owner_t;

static void slice_owner_destroy(void *arg) {
    slice_owner_t *o = arg;
    HANDOFF_IN();
    o->destroy(o->user_data);
    free(o);
}

grpc_slice __wrap_grpc_slice_new_with_user_data(void *p, size_t len, void (*destroy)(void *),
                                                void *user_data) {
    slice_owner_t *o = xmalloc(sizeof *o);
    o->destroy = destroy;
    o->user_data = user_data;
    HANDOFF_OUT();
    return __real_grpc_slice_new_with_user_data(p, len, slice_owner_destroy, o);
}

/* The owner's last use of a pooled blob comes before its unref, which may
 * hand the blob to another thread's destroy function. */
void __wrap_grpc_slice_unref(grpc_slice s) {
    HANDOFF_OUT();
    __real_grpc_slice_unref(s);
}
