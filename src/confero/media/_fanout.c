/*
 * confero.media._fanout: the per-copy forwarding hot path in C.
 *
 * The same engine as confero/media/fanout.py, whose pure-Python engine is the reference: for
 * the same calls this module must send the same bytes and keep the same counters
 * (tests/unit/test_fanout_differential.py checks it). The API (_fanout.pyi has the types):
 *
 *   Output(fd, host, port, srtp_session, srtp_protect, keep)
 *       One subscriber connection's send side: a dup() of the nominated socket, the remote
 *       address, and libsrtp's srtp_t with the address of srtp_protect (both taken from
 *       pylibsrtp by aiortc_hooks, the only module that knows where they are). `keep` is the
 *       pylibsrtp Session that owns the srtp_t; holding it keeps the session alive.
 *   Ring()
 *       One UpTrack's retransmission ring (the packets as received), shared by its copies.
 *   Numbering(next_seq=0, next_ts=0, rtx_seq=0)
 *       One output stream's numbering: offsets, the last sequence number and timestamp sent,
 *       the RTX sequence. A Copy makes its own, or shares another's (`numbering=`), so that a
 *       standby copy on another layer continues the same sequence/timestamp space.
 *   Copy(ssrc, payload_type, extension, ring, rtx_ssrc, rtx_payload_type, next_seq, ...)
 *       One DownTrack's rewrite state; answers NACKs from the ring with its own header.
 *   fanout(copies, packet, offset, keyframe, ring=None) -> list[int] | None
 *       Remember one decrypted RTP packet in the ring, then rewrite and send it to every
 *       copy; returns the indices of copies that started on this packet (a keyframe), or None.
 *   bind_loop(loop, schedule=None) -> Queue, unbind_loop(loop) -> bool
 *       Give an event loop its own send queue (see "send queue"); unbinding flushes it.
 *
 * Per copy: header rewrite into a buffer on the stack, then either srtp_protect + sendto at
 * once, or, while the running event loop has a Queue, a place in that queue, sent at the end
 * of the loop iteration as UDP GSO runs. No Python objects are created per copy, and no
 * Python code runs inside the loop over the copies except what freeing an object can run (a
 * full queue is flushed there); the loop holds strong references, so that cannot pull the
 * list or a copy away under it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING_SIZE 256
#define RING_MASK (RING_SIZE - 1)
#define YOUNG_PACKETS 256
#define MAX_PACKET 2048
#define SRTP_TRAILER 144 /* SRTP_MAX_TRAILER_LEN: tag + MKI */
#define MAX_EXTENSION 64
#define SCRATCH_SIZE (MAX_PACKET + SRTP_TRAILER) /* one packet, built and protected in place */

typedef int (*srtp_protect_fn)(void *ctx, void *header, int *length);

/* Process-wide, read-only or counters only (every call holds the GIL): */
static long open_descriptors = 0;        /* descriptors held by Outputs (tests check it returns to 0) */
static unsigned long long next_serial = 1; /* Copy identities for Numbering ownership (never reused) */
static PyObject *bound = NULL;           /* list of the Queues of bound loops */
static PyObject *get_running_loop = NULL; /* asyncio's _get_running_loop, once a loop is bound */

/* ------------------------------------------------------------------------------ Output */

struct Queue;

typedef struct {
    PyObject_HEAD
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    void *srtp;
    srtp_protect_fn protect;
    PyObject *keep;
    unsigned long long sent;
    unsigned long long errors;
    unsigned long long segmented; /* datagrams that left in a segmented (GSO) send */
    struct Queue *queue;          /* the queue holding this Output's packets (borrowed; it holds us) */
    int head;                     /* this Output's queued packets: first and last entry, -1: none */
    int tail;
} Output;

/* ------------------------------------------------------------------ send queue (batching)
 *
 * Each bound event loop has its own Queue (bind_loop). While that loop runs, fanout() does not
 * send copies at once: their plaintext is queued, per Output in order, and the queue asks the
 * loop (schedule = loop.call_soon) for one flush() at the end of its I/O phase. flush() then
 * sends each Output's run of packets of (about) the same size as one sendmsg() with
 * UDP_SEGMENT (UDP GSO, Linux 4.18+): the kernel builds, routes and delivers them as one unit,
 * cutting the per-datagram cost (bench/sendpath.py). Packets shorter than the run by at most
 * PAD_MAX bytes are brought to its size with RTP padding (RFC 3550 5.1); a shorter packet may
 * end a run unpadded. Under light load the loop wakes per packet and runs hold one packet; the
 * busier the loop, the longer the runs; but no copy waits more than MAX_DELAY_NS (1 ms, the
 * queue's max_delay) for its flush, and a flush sends at most MAX_BATCH copies (sending takes ~1-3 µs per copy, so
 * one flush stays near a millisecond). Where the running loop has no Queue (or no loop runs),
 * every copy is sent immediately.
 *
 * A queue belongs to its loop: two servers in two threads, each with its loop, never share
 * one, and an Output is queued in one queue at a time (a copy for an Output already queued in
 * another loop's queue is sent at once).
 */
#define QUEUE_ARENA (1 << 19)
#define MAX_SEGMENTS 64 /* the kernel's UDP_MAX_SEGMENTS */
#define MAX_GSO_BYTES 60000
#define MAX_GSO_SEGMENT 1400 /* stay under a 1500-byte MTU with IP and UDP headers */
#define TAG_MAX 32 /* SRTP tag and MKI: 16 for AEAD_AES_256_GCM, 10 for AES_CM_128_HMAC_SHA1_80 */
#define PAD_MAX 16
#define GSO_FAILURES_MAX 16
#define MAX_DELAY_NS 1000000 /* a queued copy waits at most this long for its flush */
#define MAX_BATCH 512         /* copies per flush: about a millisecond of sending */
#define GSO_BUFFER (MAX_GSO_BYTES + MAX_PACKET + SRTP_TRAILER)
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

typedef struct {
    uint32_t offset;
    uint16_t length;
    int next;
} Entry;

typedef struct Queue {
    PyObject_HEAD
    PyObject *loop;     /* the loop this queue serves (what _get_running_loop() returns); None: no loop */
    PyObject *schedule; /* schedule(flush) arranges one flush() call; NULL: send at once */
    int binds;          /* bind_loop() calls not yet undone */
    int scheduled;      /* a flush() call is arranged and has not run yet */
    int gso_enabled;    /* cleared when the kernel keeps refusing UDP_SEGMENT */
    int gso_failures;
    long long oldest_ns; /* when the queue's first entry was queued */
    long long max_delay_ns; /* flush when the oldest entry has waited this long (MAX_DELAY_NS) */
    size_t used;         /* bytes of arena in use */
    int n_entries;
    int n_dirty;
    uint8_t *arena;       /* QUEUE_ARENA bytes of queued plaintext, then: */
    uint8_t *gso_buffer;  /* one segmented send: up to MAX_SEGMENTS protected packets */
    Entry entries[MAX_BATCH];
    Output *dirty[MAX_BATCH]; /* Outputs with queued packets: strong references until flushed */
} Queue;

static PyTypeObject QueueType;
static PyTypeObject OutputType;

/* `host` (numeric only, no lookup; IPv6 scope ids such as "fe80::1%eth0" are understood) and
 * `port` into `addr`. Returns 0, or -1 with ValueError set. */
static int
parse_address(const char *host, int port, struct sockaddr_storage *addr, socklen_t *addrlen)
{
    if (port <= 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, NULL, &hints, &found) != 0 || !found || found->ai_addrlen > sizeof(*addr)) {
        if (found)
            freeaddrinfo(found);
        PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
        return -1;
    }
    memset(addr, 0, sizeof(*addr));
    memcpy(addr, found->ai_addr, found->ai_addrlen);
    *addrlen = (socklen_t)found->ai_addrlen;
    freeaddrinfo(found);
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    return 0;
}

static int
Output_init(Output *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "host", "port", "srtp_session", "srtp_protect", "keep", NULL};
    int fd, port;
    const char *host;
    unsigned long long session, protect;
    PyObject *keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "isiKKO", kwlist, &fd, &host, &port, &session, &protect,
                                     &keep))
        return -1;
    if (!session || !protect) {
        PyErr_SetString(PyExc_ValueError, "srtp_session and srtp_protect must not be NULL");
        return -1;
    }
    if (self->head >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "this Output has queued packets");
        return -1;
    }
    if (parse_address(host, port, &self->addr, &self->addrlen) < 0)
        return -1;
    if (self->fd >= 0) {
        close(self->fd);
        open_descriptors--;
    }
    /* Our own descriptor: if the ICE transport closes its socket first, this number can never
     * be reused for another file while we still hold it. */
    self->fd = dup(fd);
    if (self->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    open_descriptors++;
    self->srtp = (void *)(uintptr_t)session;
    self->protect = (srtp_protect_fn)(uintptr_t)protect;
    Py_INCREF(keep);
    Py_XSETREF(self->keep, keep);
    return 0;
}

static PyObject *
Output_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Output *self = (Output *)type->tp_alloc(type, 0);
    if (self) {
        self->fd = -1;
        self->head = self->tail = -1;
    }
    return (PyObject *)self;
}

static void
output_release(Output *self)
{
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
        open_descriptors--;
    }
    self->srtp = NULL;
    Py_CLEAR(self->keep);
}

static void
Output_dealloc(Output *self)
{
    output_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Send one protected datagram, counting it. Returns 0 on success. */
static inline int
output_sendto(Output *self, const uint8_t *data, int n)
{
    if (sendto(self->fd, data, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&self->addr, self->addrlen) < 0) {
        self->errors++;
        return -1;
    }
    self->sent++;
    return 0;
}

/* Protect `n` bytes at `buffer` (room for the SRTP trailer after them) and send them.
 * Returns 0 on success. */
static inline int
output_send_now(Output *self, uint8_t *buffer, int n)
{
    if (self->fd < 0 || !self->srtp)
        return -1;
    int length = n;
    if (self->protect(self->srtp, buffer, &length) != 0) {
        self->errors++;
        return -1;
    }
    return output_sendto(self, buffer, length);
}

static inline long long
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void queue_flush_all(Queue *queue);

/* Queue `n` plaintext bytes from `buffer` for `self` in `queue`, or send them now when there
 * is no queue. Returns 0 when queued or sent. May flush the queue (it is full), which can run
 * Python code: the caller holds a reference to `queue`. */
static int
output_queue(Output *self, Queue *queue, uint8_t *buffer, int n)
{
    if (!queue || !queue->schedule || (self->queue && self->queue != queue))
        return output_send_now(self, buffer, n);
    if (self->fd < 0 || !self->srtp)
        return -1;
    if (queue->n_entries >= MAX_BATCH || queue->used + (size_t)n > QUEUE_ARENA) {
        Py_INCREF(self); /* freeing the flushed Outputs can run code that lets go of this one */
        queue_flush_all(queue);
        int status = output_queue(self, queue, buffer, n); /* everything checked again */
        Py_DECREF(self);
        return status;
    }
    if (queue->n_entries == 0)
        queue->oldest_ns = now_ns();
    int index = queue->n_entries++;
    Entry *entry = &queue->entries[index];
    entry->offset = (uint32_t)queue->used;
    entry->length = (uint16_t)n;
    entry->next = -1;
    memcpy(queue->arena + queue->used, buffer, (size_t)n);
    queue->used += (size_t)n;
    if (self->head < 0) {
        Py_INCREF(self);
        queue->dirty[queue->n_dirty++] = self;
        self->queue = queue;
        self->head = index;
    } else {
        queue->entries[self->tail].next = index;
    }
    self->tail = index;
    return 0;
}

/* RTP padding to `target` bytes for the packet of `length` bytes at `p` (room is there). */
static inline void
pad_to(uint8_t *p, int length, int target)
{
    int extra = target - length;
    if (extra <= 0)
        return;
    int count = extra;
    if (p[0] & 0x20) {
        count += p[length - 1];
        p[length - 1] = 0;
    }
    memset(p + length, 0, (size_t)(extra - 1));
    p[0] |= 0x20;
    p[target - 1] = (uint8_t)count;
}

static inline int
existing_padding(const uint8_t *p, int length)
{
    return (p[0] & 0x20) ? p[length - 1] : 0;
}

/* Send `total` bytes of the queue's gso_buffer made of segments of `segment` bytes (the last
 * may be shorter), `count` of them. Falls back to one sendto per segment if GSO is refused. */
static void
output_send_segments(Output *self, Queue *queue, int segment, int count, int total)
{
    uint8_t *buffer = queue->gso_buffer;
    if (count == 1) {
        output_sendto(self, buffer, total);
        return;
    }
    if (queue->gso_enabled) {
        union {
            char buf[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {buffer, (size_t)total};
        struct msghdr message = {0};
        message.msg_name = &self->addr;
        message.msg_namelen = self->addrlen;
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        message.msg_control = control.buf;
        message.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_UDP;
        cmsg->cmsg_type = UDP_SEGMENT;
        cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = (uint16_t)segment;
        memcpy(CMSG_DATA(cmsg), &size, sizeof(size));
        if (sendmsg(self->fd, &message, MSG_DONTWAIT) >= 0) {
            self->sent += (unsigned long long)count;
            self->segmented += (unsigned long long)count;
            queue->gso_failures = 0;
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED) {
            self->errors += (unsigned long long)count;
            return;
        }
        /* EINVAL, EIO, ENOPROTOOPT...: this route or kernel refuses UDP GSO. Send these one by
         * one; after repeated refusals with no success, stop trying. */
        if (++queue->gso_failures >= GSO_FAILURES_MAX)
            queue->gso_enabled = 0;
    }
    for (int offset = 0; offset < total; offset += segment)
        output_sendto(self, buffer + offset, total - offset < segment ? total - offset : segment);
}

/* Protect and send one Output's queued packets, in order, as runs of equal-sized segments. */
static void
output_flush(Output *self, Queue *queue)
{
    Entry *entries = queue->entries;
    const uint8_t *arena = queue->arena;
    uint8_t *gso_buffer = queue->gso_buffer;
    int index = self->head;
    while (index >= 0) {
        /* choose the run: [index, end) */
        int size = entries[index].length; /* the run's segment size before protection */
        int min_size = size;
        int count = 1;
        int end = entries[index].next;
        int padding_ok = existing_padding(arena + entries[index].offset, size) + PAD_MAX <= 255;
        int last_short = 0;
        while (end >= 0 && count < MAX_SEGMENTS && queue->gso_enabled && size + TAG_MAX <= MAX_GSO_SEGMENT) {
            int length = entries[end].length;
            const uint8_t *p = arena + entries[end].offset;
            int largest = size > length ? size : length;
            if ((count + 1) * (largest + TAG_MAX) > MAX_GSO_BYTES || largest + TAG_MAX > MAX_GSO_SEGMENT)
                break;
            if (length <= size && size - length <= PAD_MAX && existing_padding(p, length) + PAD_MAX <= 255) {
                if (length < min_size)
                    min_size = length;
            } else if (length > size && length - min_size <= PAD_MAX && padding_ok &&
                       existing_padding(p, length) + PAD_MAX <= 255) {
                size = length;
            } else if (length < size) {
                last_short = 1; /* ends the run, unpadded */
            } else {
                break;
            }
            count++;
            end = entries[end].next;
            if (last_short)
                break;
        }
        /* protect each into gso_buffer at a fixed stride */
        int written = 0, segment = 0, total = 0;
        for (int k = index; k != end; k = entries[k].next) {
            int length = entries[k].length;
            int is_last = entries[k].next == end;
            int target = (is_last || length > size) ? length : size;
            uint8_t *p = gso_buffer + total;
            memcpy(p, arena + entries[k].offset, (size_t)length);
            if (!is_last)
                pad_to(p, length, target);
            int out = target;
            if (self->protect(self->srtp, p, &out) != 0) {
                self->errors++;
                continue;
            }
            if (written == 0) {
                segment = out; /* padded size + this session's tag */
            } else if (out > segment || (out < segment && !is_last)) {
                /* cannot happen with a fixed tag; send what we have and this one alone */
                output_send_segments(self, queue, segment, written, total);
                memmove(gso_buffer, p, (size_t)out);
                written = 0;
                total = 0;
                segment = out;
            }
            written++;
            total += out;
        }
        if (written)
            output_send_segments(self, queue, segment, written, total);
        index = end;
    }
}

/* Send everything queued. Only freeing the flushed Outputs (at the end) can run Python code. */
static void
queue_flush_all(Queue *queue)
{
    int count = queue->n_dirty;
    Output *flushed[MAX_BATCH];
    for (int i = 0; i < count; i++) {
        Output *output = flushed[i] = queue->dirty[i];
        if (output->fd >= 0 && output->srtp)
            output_flush(output, queue);
        output->head = output->tail = -1;
        output->queue = NULL;
    }
    queue->n_entries = 0;
    queue->n_dirty = 0;
    queue->used = 0;
    /* the queue is consistent (empty) before any of this can run code that queues again */
    for (int i = 0; i < count; i++)
        Py_DECREF(flushed[i]);
}

/* After a fanout() call: arrange the loop's flush if copies wait and none is arranged. */
static void
queue_schedule(Queue *queue)
{
    if (!queue->n_entries || queue->scheduled || !queue->schedule)
        return;
    queue->scheduled = 1;
    PyObject *schedule = queue->schedule;
    Py_INCREF(schedule);
    PyObject *flush = PyObject_GetAttrString((PyObject *)queue, "flush");
    PyObject *result = flush ? PyObject_CallOneArg(schedule, flush) : NULL;
    Py_XDECREF(flush);
    if (!result) {
        /* reported once (the loop is closed, say); from now on copies go out at once, and none
         * is left behind */
        PyErr_WriteUnraisable(schedule);
        if (queue->schedule == schedule)
            Py_CLEAR(queue->schedule);
        queue->scheduled = 0;
        queue_flush_all(queue);
    } else {
        Py_DECREF(result);
    }
    Py_DECREF(schedule);
}

/* The queue of the running event loop, a new reference; NULL with no error: none. */
static Queue *
running_queue(void)
{
    PyObject *loop = PyObject_CallNoArgs(get_running_loop);
    if (!loop)
        return NULL;
    Queue *found = NULL;
    for (Py_ssize_t i = PyList_GET_SIZE(bound) - 1; i >= 0; i--) {
        Queue *queue = (Queue *)PyList_GET_ITEM(bound, i);
        if (queue->loop == loop) {
            found = queue;
            Py_INCREF(found);
            break;
        }
    }
    Py_DECREF(loop);
    return found;
}

static PyObject *
Queue_flush(Queue *self, PyObject *Py_UNUSED(ignored))
{
    self->scheduled = 0;
    queue_flush_all(self);
    Py_RETURN_NONE;
}

static PyObject *
Queue_queued(Queue *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->n_entries);
}

static PyObject *
Queue_gso_enabled(Queue *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->gso_enabled);
}

static void
Queue_dealloc(Queue *self)
{
    /* an unbound queue: drop what is left (its Outputs forget it) */
    int count = self->n_dirty;
    Output *dropped[MAX_BATCH];
    for (int i = 0; i < count; i++) {
        Output *output = dropped[i] = self->dirty[i];
        output->head = output->tail = -1;
        output->queue = NULL;
    }
    self->n_dirty = 0;
    self->n_entries = 0;
    for (int i = 0; i < count; i++)
        Py_DECREF(dropped[i]);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->schedule);
    PyMem_RawFree(self->arena);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Queue_get_max_delay(Queue *self, void *closure)
{
    return PyFloat_FromDouble((double)self->max_delay_ns / 1e9);
}

static int
Queue_set_max_delay(Queue *self, PyObject *value, void *closure)
{
    double seconds = value ? PyFloat_AsDouble(value) : -1.0;
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    if (!(seconds >= 0.0 && seconds <= 3600.0)) {
        PyErr_SetString(PyExc_ValueError, "max_delay is 0 to 3600 seconds");
        return -1;
    }
    self->max_delay_ns = (long long)(seconds * 1e9);
    return 0;
}

static PyGetSetDef Queue_getset[] = {
    {"max_delay", (getter)Queue_get_max_delay, (setter)Queue_set_max_delay,
     "seconds the oldest queued copy may wait before the next fanout() flushes (default 0.001)", NULL},
    {NULL}};

static PyMethodDef Queue_methods[] = {
    {"flush", (PyCFunction)Queue_flush, METH_NOARGS, "Send every queued copy (segmented where possible)."},
    {"queued", (PyCFunction)Queue_queued, METH_NOARGS, "Copies waiting for flush()."},
    {"gso_enabled", (PyCFunction)Queue_gso_enabled, METH_NOARGS, "False once the kernel refused UDP_SEGMENT."},
    {NULL}};

static PyMemberDef Queue_members[] = {
    {"loop", T_OBJECT, offsetof(Queue, loop), READONLY, "the event loop this queue serves (None: no loop)"},
    {"binds", T_INT, offsetof(Queue, binds), READONLY, "bind_loop() calls not yet undone by unbind_loop()"},
    {NULL}};

static PyTypeObject QueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "confero.media._fanout.Queue",
    .tp_basicsize = sizeof(Queue),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One event loop's send queue (made by bind_loop()).",
    .tp_dealloc = (destructor)Queue_dealloc,
    .tp_methods = Queue_methods,
    .tp_members = Queue_members,
    .tp_getset = Queue_getset,
};

static PyObject *
Output_send(Output *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (self->fd < 0 || !self->srtp) { /* closed: dropped, not counted (as the reference) */
        PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }
    if (view.len > MAX_PACKET) {
        PyBuffer_Release(&view);
        self->errors++;
        Py_RETURN_FALSE;
    }
    uint8_t scratch[SCRATCH_SIZE];
    memcpy(scratch, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(output_send_now(self, scratch, (int)view.len) == 0);
}

static PyObject *
Output_retarget(Output *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "host", "port", NULL};
    int fd, port;
    const char *host;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "isi", kwlist, &fd, &host, &port))
        return NULL;
    if (self->fd < 0) /* closed: nothing to move */
        Py_RETURN_NONE;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (parse_address(host, port, &addr, &addrlen) < 0)
        return NULL;
    int copy = dup(fd);
    if (copy < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    close(self->fd);
    self->fd = copy;
    /* queued packets, if any, leave for the new address at the next flush */
    memcpy(&self->addr, &addr, sizeof(addr));
    self->addrlen = addrlen;
    Py_RETURN_NONE;
}

static PyObject *
Output_close(Output *self, PyObject *Py_UNUSED(ignored))
{
    output_release(self);
    Py_RETURN_NONE;
}

static PyObject *
Output_get_closed(Output *self, void *closure)
{
    return PyBool_FromLong(self->fd < 0);
}

static PyMethodDef Output_methods[] = {
    {"send", (PyCFunction)Output_send, METH_O, "Protect one RTP packet and send it; False when dropped."},
    {"close", (PyCFunction)Output_close, METH_NOARGS, "Close our socket descriptor (idempotent)."},
    {"retarget", (PyCFunction)(void (*)(void))Output_retarget, METH_VARARGS | METH_KEYWORDS,
     "Send from now on through (a dup of) descriptor fd to host:port (the peer's address changed)."},
    {NULL}};

static PyMemberDef Output_members[] = {
    {"sent", T_ULONGLONG, offsetof(Output, sent), READONLY, "packets sent"},
    {"errors", T_ULONGLONG, offsetof(Output, errors), READONLY, "packets dropped by SRTP or the socket"},
    {"segmented", T_ULONGLONG, offsetof(Output, segmented), READONLY, "packets sent in segmented (GSO) sends"},
    {NULL}};

static PyGetSetDef Output_getset[] = {{"closed", (getter)Output_get_closed, NULL, "closed", NULL}, {NULL}};

static PyTypeObject OutputType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "confero.media._fanout.Output",
    .tp_basicsize = sizeof(Output),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Send side of one subscriber connection: SRTP protect and sendto on a dup'ed socket.",
    .tp_new = Output_new,
    .tp_init = (initproc)Output_init,
    .tp_dealloc = (destructor)Output_dealloc,
    .tp_methods = Output_methods,
    .tp_members = Output_members,
    .tp_getset = Output_getset,
};

/* -------------------------------------------------------------------------------- Ring */

typedef struct {
    uint8_t *data;
    uint16_t length;
    uint16_t capacity;
    uint16_t offset; /* payload offset */
    uint16_t seq;
    char valid;
} Slot;

/* One UpTrack's retransmission ring: the last RING_SIZE packets as received (decrypted), by
 * sequence number. Every copy of the track answers NACKs from it, rebuilding its own header,
 * so memory grows with published tracks, not with forwarded copies. */
typedef struct {
    PyObject_HEAD
    Slot slots[RING_SIZE];
} Ring;

static PyTypeObject RingType;

static void
ring_clear(Ring *self)
{
    for (int i = 0; i < RING_SIZE; i++)
        self->slots[i].valid = 0;
}

static void
Ring_dealloc(Ring *self)
{
    for (int i = 0; i < RING_SIZE; i++)
        PyMem_RawFree(self->slots[i].data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline void
ring_store(Ring *self, const uint8_t *data, Py_ssize_t size, Py_ssize_t offset)
{
    unsigned int seq = ((unsigned)data[2] << 8) | data[3];
    Slot *slot = &self->slots[seq & RING_MASK];
    if (slot->capacity < size) {
        uint8_t *grown = PyMem_RawRealloc(slot->data, (size_t)size);
        if (!grown) {
            slot->valid = 0;
            return;
        }
        slot->data = grown;
        slot->capacity = (uint16_t)size;
    }
    memcpy(slot->data, data, (size_t)size);
    slot->length = (uint16_t)size;
    slot->offset = (uint16_t)offset;
    slot->seq = (uint16_t)seq;
    slot->valid = 1;
}

static PyObject *
Ring_clear(Ring *self, PyObject *Py_UNUSED(ignored))
{
    ring_clear(self);
    Py_RETURN_NONE;
}

static PyObject *
Ring_held(Ring *self, PyObject *Py_UNUSED(ignored))
{
    long held = 0;
    for (int i = 0; i < RING_SIZE; i++)
        held += self->slots[i].valid;
    return PyLong_FromLong(held);
}

static PyMethodDef Ring_methods[] = {
    {"clear", (PyCFunction)Ring_clear, METH_NOARGS, "Forget every packet (the source changed)."},
    {"held", (PyCFunction)Ring_held, METH_NOARGS, "Packets the ring holds now."},
    {NULL}};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "confero.media._fanout.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Retransmission ring of one published track, shared by its copies.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
};

/* --------------------------------------------------------------------------- Numbering */

/* One output stream's numbering. The copy that last started with it (its `owner`) numbers
 * with it; another copy sharing it starts only after resync() (a takeover), and from then on
 * the former owner drops its packets and waits. */
typedef struct {
    PyObject_HEAD
    unsigned int next_seq; /* where the next start begins */
    unsigned int next_ts;
    unsigned int last_seq; /* the last packet sent */
    unsigned int last_ts;
    unsigned int seq_off; /* fixed at the owner's start */
    unsigned int ts_off;
    unsigned int rtx_seq;
    unsigned int resync_step; /* with resync_pending: the next start continues after last_* */
    char resync_pending;
    unsigned long long owner; /* serial of the copy numbering with it; 0: none yet */
} Numbering;

static PyTypeObject NumberingType;

static int
Numbering_init(Numbering *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"next_seq", "next_ts", "rtx_seq", NULL};
    unsigned int next_seq = 0, next_ts = 0, rtx_seq = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|III", kwlist, &next_seq, &next_ts, &rtx_seq))
        return -1;
    self->next_seq = next_seq & 0xFFFF;
    self->next_ts = next_ts;
    self->rtx_seq = rtx_seq & 0xFFFF;
    self->last_seq = self->last_ts = self->seq_off = self->ts_off = 0;
    self->resync_pending = 0;
    self->resync_step = 0;
    self->owner = 0;
    return 0;
}

static PyMemberDef Numbering_members[] = {
    {"next_seq", T_UINT, offsetof(Numbering, next_seq), READONLY, "the sequence number the next start begins with"},
    {"next_ts", T_UINT, offsetof(Numbering, next_ts), READONLY, "the timestamp the next start begins with"},
    {"last_seq", T_UINT, offsetof(Numbering, last_seq), READONLY, "the last sequence number sent"},
    {"last_ts", T_UINT, offsetof(Numbering, last_ts), READONLY, "the last timestamp sent"},
    {"seq_off", T_UINT, offsetof(Numbering, seq_off), READONLY, "sequence offset from the source"},
    {"ts_off", T_UINT, offsetof(Numbering, ts_off), READONLY, "timestamp offset from the source"},
    {"rtx_seq", T_UINT, offsetof(Numbering, rtx_seq), READONLY, "the next RTX sequence number"},
    {NULL}};

static PyObject *
Numbering_get_resync(Numbering *self, void *closure)
{
    if (!self->resync_pending)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->resync_step);
}

static PyGetSetDef Numbering_getset[] = {
    {"resync_step", (getter)Numbering_get_resync, NULL, "the timestamp step of a pending resync, or None", NULL},
    {NULL}};

static PyTypeObject NumberingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "confero.media._fanout.Numbering",
    .tp_basicsize = sizeof(Numbering),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The sequence and timestamp numbering of one output stream, shared by the copies feeding it.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Numbering_init,
    .tp_members = Numbering_members,
    .tp_getset = Numbering_getset,
};

/* -------------------------------------------------------------------------------- Copy */

typedef struct {
    PyObject_HEAD
    Output *output;       /* NULL until started */
    Ring *ring;           /* the UpTrack's ring; NULL: no retransmission (audio) */
    Numbering *numbering; /* never NULL once initialised */
    unsigned long long serial;
    uint32_t ssrc;
    uint32_t rtx_ssrc;
    int rtx_payload_type; /* -1: no RTX */
    int payload_type;
    uint8_t b0;
    uint8_t ext[MAX_EXTENSION];
    int ext_len;
    /* state (the same names as the Python engine) */
    char waiting; /* T_BOOL members are C chars */
    char enabled;
    int young;
    unsigned int start_seq;
    unsigned int begin_seq; /* our first sequence number since the last (re)start */
    unsigned long long packets;
    unsigned long long octets;
    unsigned long long retransmitted;
    unsigned long long send_errors;
} Copy;

static PyTypeObject CopyType;

static int
Copy_init(Copy *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ssrc", "payload_type", "extension", "ring", "rtx_ssrc", "rtx_payload_type",
                             "next_seq", "next_ts", "rtx_seq", "numbering", NULL};
    unsigned int ssrc, rtx_ssrc = 0;
    int payload_type, rtx_payload_type = -1;
    PyObject *ring = Py_None, *numbering = Py_None;
    PyObject *next_seq = NULL, *next_ts = NULL, *rtx_seq = NULL;
    Py_buffer ext;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Iiy*|OIiOOOO", kwlist, &ssrc, &payload_type, &ext, &ring,
                                     &rtx_ssrc, &rtx_payload_type, &next_seq, &next_ts, &rtx_seq, &numbering))
        return -1;
    const char *error = NULL;
    PyObject *kind = PyExc_ValueError;
    if (ring != Py_None && !PyObject_TypeCheck(ring, &RingType)) {
        kind = PyExc_TypeError;
        error = "ring must be a Ring or None";
    } else if (numbering != Py_None && !PyObject_TypeCheck(numbering, &NumberingType)) {
        kind = PyExc_TypeError;
        error = "numbering must be a Numbering or None";
    } else if (numbering != Py_None && (next_seq || next_ts || rtx_seq)) {
        kind = PyExc_TypeError;
        error = "a shared numbering has its own next_seq, next_ts and rtx_seq";
    } else if (ext.len > MAX_EXTENSION || ext.len % 4) {
        error = "extension block must be a multiple of 4 bytes, at most 64";
    } else if (payload_type < 0 || payload_type > 127 || rtx_payload_type > 127) {
        error = "payload type out of range";
    }
    if (error) {
        PyBuffer_Release(&ext);
        PyErr_SetString(kind, error);
        return -1;
    }
    if (numbering == Py_None) {
        /* our own numbering: Numbering(next_seq, next_ts, rtx_seq) */
        PyObject *values[3] = {next_seq, next_ts, rtx_seq};
        PyObject *zero = PyLong_FromLong(0);
        if (!zero) {
            PyBuffer_Release(&ext);
            return -1;
        }
        for (int i = 0; i < 3; i++)
            if (!values[i])
                values[i] = zero;
        numbering = PyObject_Vectorcall((PyObject *)&NumberingType, values, 3, NULL);
        Py_DECREF(zero);
        if (!numbering) {
            PyBuffer_Release(&ext);
            return -1;
        }
    } else {
        Py_INCREF(numbering);
    }
    memcpy(self->ext, ext.buf, (size_t)ext.len);
    self->ext_len = (int)ext.len;
    PyBuffer_Release(&ext);
    self->serial = next_serial++;
    self->ssrc = ssrc;
    self->payload_type = payload_type;
    self->rtx_ssrc = rtx_ssrc;
    self->rtx_payload_type = rtx_payload_type;
    self->b0 = 0x80 | (self->ext_len ? 0x10 : 0);
    self->waiting = 1;
    self->enabled = 1;
    self->young = 0;
    self->start_seq = self->begin_seq = 0;
    Py_XSETREF(self->numbering, (Numbering *)numbering);
    if (ring != Py_None)
        Py_INCREF(ring);
    Py_XSETREF(self->ring, ring != Py_None ? (Ring *)ring : NULL);
    return 0;
}

static void
Copy_dealloc(Copy *self)
{
    Py_CLEAR(self->ring);
    Py_CLEAR(self->output);
    Py_CLEAR(self->numbering);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline int
copy_ready(Copy *self)
{
    if (!self->numbering) {
        PyErr_SetString(PyExc_RuntimeError, "Copy.__init__() was not called");
        return 0;
    }
    return 1;
}

static PyObject *
Copy_set_output(Copy *self, PyObject *arg)
{
    if (arg == Py_None) {
        Py_CLEAR(self->output);
        Py_RETURN_NONE;
    }
    if (!PyObject_TypeCheck(arg, &OutputType)) {
        PyErr_SetString(PyExc_TypeError, "set_output() takes an Output or None");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(self->output, (Output *)arg);
    Py_RETURN_NONE;
}

static PyObject *
Copy_clear_ring(Copy *self, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(self->ring);
    Py_RETURN_NONE;
}

static PyObject *
Copy_resync(Copy *self, PyObject *arg)
{
    if (!copy_ready(self))
        return NULL;
    long step = PyLong_AsLong(arg);
    if (step == -1 && PyErr_Occurred())
        return NULL;
    self->numbering->resync_step = (unsigned int)((unsigned long)step & 0xFFFFFFFFUL);
    self->numbering->resync_pending = 1;
    self->waiting = 1;
    Py_RETURN_NONE;
}

static inline void
put16(uint8_t *p, unsigned int v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t
get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Rebuild our copy of the ring's packet for `out_seq` into `scratch` (as RTX where negotiated).
 * Returns its length, or 0 when the ring does not hold it for us. */
static int
copy_rebuild(Copy *self, Ring *ring, Numbering *numbering, unsigned int out_seq, uint8_t *scratch)
{
    if (((out_seq - self->begin_seq) & 0xFFFF) >= 0x8000)
        return 0; /* before our (re)start: another source, or offsets that no longer apply */
    unsigned int seq = (out_seq - numbering->seq_off) & 0xFFFF;
    Slot *slot = &ring->slots[seq & RING_MASK];
    if (!slot->valid || slot->seq != seq)
        return 0;
    const uint8_t *original = slot->data;
    int payload_len = slot->length - slot->offset;
    int header_len = 12 + self->ext_len;
    int rtx = self->rtx_payload_type >= 0;
    int n = header_len + (rtx ? 2 : 0) + payload_len;
    if (n > MAX_PACKET)
        return 0;
    scratch[0] = self->b0 | (original[0] & 0x20);
    if (rtx) {
        /* RFC 4588: RTX SSRC, payload type and sequence; the original sequence number first */
        scratch[1] = (uint8_t)((original[1] & 0x80) | self->rtx_payload_type);
        put16(scratch + 2, numbering->rtx_seq);
        numbering->rtx_seq = (numbering->rtx_seq + 1) & 0xFFFF;
        put32(scratch + 8, self->rtx_ssrc);
        put16(scratch + header_len, out_seq);
    } else {
        scratch[1] = (uint8_t)((original[1] & 0x80) | self->payload_type);
        put16(scratch + 2, out_seq);
        put32(scratch + 8, self->ssrc);
    }
    put32(scratch + 4, (uint32_t)(get32(original + 4) + numbering->ts_off));
    if (self->ext_len)
        memcpy(scratch + 12, self->ext, (size_t)self->ext_len);
    memcpy(scratch + header_len + (rtx ? 2 : 0), original + slot->offset, (size_t)payload_len);
    return n;
}

static PyObject *
Copy_retransmit(Copy *self, PyObject *arg)
{
    if (!copy_ready(self))
        return NULL;
    Ring *ring = self->ring;
    Output *output = self->output;
    Numbering *numbering = self->numbering;
    if (!ring || !output || self->waiting || numbering->owner != self->serial)
        Py_RETURN_NONE;
    PyObject *seq_iter = PyObject_GetIter(arg);
    if (!seq_iter)
        return NULL;
    /* the iterator runs Python code: hold what we use */
    Py_INCREF(ring);
    Py_INCREF(output);
    Py_INCREF(numbering);
    uint8_t scratch[SCRATCH_SIZE];
    PyObject *item;
    while ((item = PyIter_Next(seq_iter))) {
        long seq = PyLong_AsLong(item);
        Py_DECREF(item);
        if (seq == -1 && PyErr_Occurred())
            break;
        int n = copy_rebuild(self, ring, numbering, (unsigned int)(seq & 0xFFFF), scratch);
        if (!n)
            continue;
        if (output_send_now(output, scratch, n) == 0)
            self->retransmitted++;
        else
            self->send_errors++;
    }
    Py_DECREF(seq_iter);
    Py_DECREF(ring);
    Py_DECREF(output);
    Py_DECREF(numbering);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The per-copy hot path. Returns 1 when this copy started on this packet. The caller holds a
 * reference to `self` and `queue`. */
static inline int
copy_write(Copy *self, const uint8_t *data, Py_ssize_t offset, Py_ssize_t size, int keyframe, Queue *queue,
           uint8_t *scratch)
{
    Numbering *numbering = self->numbering;
    unsigned int seq = ((unsigned)data[2] << 8) | data[3];
    uint32_t ts = get32(data + 4);
    int started = 0;
    if (self->waiting) {
        if (!keyframe || !self->enabled)
            return 0;
        if (numbering->resync_pending) {
            /* continue after the last packet sent with this numbering, by whichever copy */
            numbering->next_seq = (numbering->last_seq + 1) & 0xFFFF;
            numbering->next_ts = (uint32_t)(numbering->last_ts + numbering->resync_step);
            numbering->resync_pending = 0;
        } else if (numbering->owner && numbering->owner != self->serial) {
            return 0; /* another copy numbers with it: only resync() lets this one take over */
        }
        numbering->seq_off = (numbering->next_seq - seq) & 0xFFFF;
        numbering->ts_off = (uint32_t)(numbering->next_ts - ts);
        numbering->owner = self->serial;
        self->start_seq = seq;
        self->begin_seq = numbering->next_seq & 0xFFFF;
        self->young = YOUNG_PACKETS;
        self->waiting = 0;
        started = 1;
    } else if (numbering->owner != self->serial) {
        self->waiting = 1; /* another copy took our numbering over */
        return 0;
    } else if (self->young) {
        self->young--;
        if (((seq - self->start_seq) & 0xFFFF) >= 0x8000)
            return 0;
    }
    if (!self->enabled)
        return started;
    Py_ssize_t payload_len = size - offset;
    int header_len = 12 + self->ext_len;
    int n = header_len + (int)payload_len;
    if (n > MAX_PACKET) {
        self->send_errors++;
        return started;
    }
    unsigned int out_seq = (seq + numbering->seq_off) & 0xFFFF;
    uint32_t out_ts = (uint32_t)(ts + numbering->ts_off);
    scratch[0] = self->b0 | (data[0] & 0x20);
    scratch[1] = (uint8_t)((data[1] & 0x80) | self->payload_type);
    put16(scratch + 2, out_seq);
    put32(scratch + 4, out_ts);
    put32(scratch + 8, self->ssrc);
    if (self->ext_len)
        memcpy(scratch + 12, self->ext, (size_t)self->ext_len);
    memcpy(scratch + header_len, data + offset, (size_t)payload_len);
    numbering->last_ts = out_ts;
    numbering->last_seq = out_seq;
    self->packets++;
    self->octets += (unsigned long long)payload_len;
    if (!self->output || output_queue(self->output, queue, scratch, n) != 0)
        self->send_errors++;
    return started;
}

static PyObject *
Copy_get_has_ring(Copy *self, void *closure)
{
    return PyBool_FromLong(self->ring != NULL);
}

static PyObject *
Copy_get_numbering(Copy *self, void *closure)
{
    if (!copy_ready(self))
        return NULL;
    Py_INCREF(self->numbering);
    return (PyObject *)self->numbering;
}

/* The numbering's state, as attributes of the copy (as before the numbering was shared). */
static PyObject *
Copy_get_numbering_field(Copy *self, void *closure)
{
    if (!copy_ready(self))
        return NULL;
    return PyLong_FromUnsignedLong(*(unsigned int *)((char *)self->numbering + (size_t)closure));
}

static PyMethodDef Copy_methods[] = {
    {"set_output", (PyCFunction)Copy_set_output, METH_O, "Send through this Output (None: stop sending)."},
    {"clear_ring", (PyCFunction)Copy_clear_ring, METH_NOARGS, "Let go of the retransmission ring."},
    {"resync", (PyCFunction)Copy_resync, METH_O,
     "From the next keyframe, continue the numbering after its last packet (timestamp + step)."},
    {"retransmit", (PyCFunction)Copy_retransmit, METH_O, "Resend these sequence numbers from the ring."},
    {NULL}};

static PyMemberDef Copy_members[] = {
    {"ssrc", T_UINT, offsetof(Copy, ssrc), READONLY, NULL},
    {"payload_type", T_INT, offsetof(Copy, payload_type), READONLY, NULL},
    {"rtx_ssrc", T_UINT, offsetof(Copy, rtx_ssrc), READONLY, NULL},
    {"rtx_payload_type", T_INT, offsetof(Copy, rtx_payload_type), READONLY, NULL},
    {"waiting", T_BOOL, offsetof(Copy, waiting), 0, "waiting for a keyframe to start"},
    {"enabled", T_BOOL, offsetof(Copy, enabled), 0, "forwarding is on"},
    {"packets", T_ULONGLONG, offsetof(Copy, packets), READONLY, NULL},
    {"octets", T_ULONGLONG, offsetof(Copy, octets), READONLY, NULL},
    {"retransmitted", T_ULONGLONG, offsetof(Copy, retransmitted), READONLY, NULL},
    {"send_errors", T_ULONGLONG, offsetof(Copy, send_errors), READONLY, NULL},
    {NULL}};

static PyGetSetDef Copy_getset[] = {
    {"has_ring", (getter)Copy_get_has_ring, NULL, "the copy holds its track's retransmission ring", NULL},
    {"numbering", (getter)Copy_get_numbering, NULL, "the output numbering this copy writes with", NULL},
    {"seq_off", (getter)Copy_get_numbering_field, NULL, "numbering.seq_off", (void *)offsetof(Numbering, seq_off)},
    {"ts_off", (getter)Copy_get_numbering_field, NULL, "numbering.ts_off", (void *)offsetof(Numbering, ts_off)},
    {"last_seq", (getter)Copy_get_numbering_field, NULL, "numbering.last_seq", (void *)offsetof(Numbering, last_seq)},
    {"last_ts", (getter)Copy_get_numbering_field, NULL, "numbering.last_ts", (void *)offsetof(Numbering, last_ts)},
    {NULL}};

static PyTypeObject CopyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "confero.media._fanout.Copy",
    .tp_basicsize = sizeof(Copy),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Rewrite state and counters of one forwarded copy.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Copy_init,
    .tp_dealloc = (destructor)Copy_dealloc,
    .tp_methods = Copy_methods,
    .tp_members = Copy_members,
    .tp_getset = Copy_getset,
};

/* ------------------------------------------------------------------------------ fanout */

static PyObject *
fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fanout(copies, packet, offset, keyframe, ring=None)");
        return NULL;
    }
    Ring *ring = NULL;
    if (nargs == 5 && args[4] != Py_None) {
        if (!PyObject_TypeCheck(args[4], &RingType)) {
            PyErr_SetString(PyExc_TypeError, "ring must be a Ring or None");
            return NULL;
        }
        ring = (Ring *)args[4];
    }
    PyObject *copies = args[0];
    if (!PyList_Check(copies)) {
        PyErr_SetString(PyExc_TypeError, "copies must be a list");
        return NULL;
    }
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "packet must be bytes");
        return NULL;
    }
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t offset = PyLong_AsSsize_t(args[2]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (size < 12 || offset < 12 || offset > size) {
        PyErr_SetString(PyExc_ValueError, "not an RTP packet with that payload offset");
        return NULL;
    }
    int keyframe = PyObject_IsTrue(args[3]);
    if (keyframe < 0)
        return NULL;
    Queue *queue = NULL;
    if (PyList_GET_SIZE(bound)) {
        queue = running_queue();
        if (!queue && PyErr_Occurred())
            return NULL;
    }
    if (ring && size <= MAX_PACKET)
        ring_store(ring, data, size, offset);
    /* Under heavy load one loop iteration can take milliseconds: do not let the first copies
     * queued in it wait for its end. */
    if (queue && queue->n_entries && now_ns() - queue->oldest_ns > queue->max_delay_ns)
        queue_flush_all(queue);
    uint8_t scratch[SCRATCH_SIZE];
    PyObject *started = NULL;
    int error = 0;
    Py_INCREF(copies);
    /* the length is read again each time, and each copy is held while it is written */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(copies); i++) {
        PyObject *item = PyList_GET_ITEM(copies, i);
        if (Py_TYPE(item) != &CopyType && !PyObject_TypeCheck(item, &CopyType)) {
            error = 1;
            PyErr_SetString(PyExc_TypeError, "copies must hold Copy objects");
            break;
        }
        if (!((Copy *)item)->numbering) {
            error = 1;
            copy_ready((Copy *)item);
            break;
        }
        Py_INCREF(item);
        int copy_started = copy_write((Copy *)item, data, offset, size, keyframe, queue, scratch);
        Py_DECREF(item);
        if (copy_started) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (!index || (!started && !(started = PyList_New(0))) || PyList_Append(started, index) < 0) {
                Py_XDECREF(index);
                error = 1;
                break;
            }
            Py_DECREF(index);
        }
    }
    Py_DECREF(copies);
    if (queue) {
        /* the copies before an error are queued: their flush is still arranged */
        PyObject *type, *value, *traceback;
        if (error)
            PyErr_Fetch(&type, &value, &traceback);
        queue_schedule(queue);
        if (error)
            PyErr_Restore(type, value, traceback);
        Py_DECREF(queue);
    }
    if (error) {
        Py_XDECREF(started);
        return NULL;
    }
    if (started)
        return started;
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------- loops and their queues */

static Queue *
bound_queue(PyObject *loop, Py_ssize_t *where)
{
    for (Py_ssize_t i = PyList_GET_SIZE(bound) - 1; i >= 0; i--) {
        Queue *queue = (Queue *)PyList_GET_ITEM(bound, i);
        if (queue->loop == loop) {
            if (where)
                *where = i;
            return queue;
        }
    }
    return NULL;
}

static PyObject *
bind_loop(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", "schedule", NULL};
    PyObject *loop, *schedule = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kwlist, &loop, &schedule))
        return NULL;
    Queue *queue = bound_queue(loop, NULL);
    if (queue) {
        queue->binds++;
        Py_INCREF(queue);
        return (PyObject *)queue;
    }
    if (!get_running_loop) {
        PyObject *events = PyImport_ImportModule("asyncio.events");
        if (!events)
            return NULL;
        get_running_loop = PyObject_GetAttrString(events, "_get_running_loop");
        Py_DECREF(events);
        if (!get_running_loop)
            return NULL;
    }
    if (schedule == Py_None) {
        if (loop == Py_None) {
            PyErr_SetString(PyExc_TypeError, "bind_loop(None) needs a schedule");
            return NULL;
        }
        schedule = PyObject_GetAttrString(loop, "call_soon");
        if (!schedule)
            return NULL;
    } else if (!PyCallable_Check(schedule)) {
        PyErr_SetString(PyExc_TypeError, "schedule must be callable");
        return NULL;
    } else {
        Py_INCREF(schedule);
    }
    queue = (Queue *)QueueType.tp_alloc(&QueueType, 0); /* zeroed */
    if (!queue) {
        Py_DECREF(schedule);
        return NULL;
    }
    Py_INCREF(loop);
    queue->loop = loop;
    queue->schedule = schedule;
    queue->binds = 1;
    queue->gso_enabled = 1;
    queue->max_delay_ns = MAX_DELAY_NS;
    /* one block, the GSO buffer right after the arena (as the static arrays were): two
     * separate page-aligned blocks made the flush's copies from one to the other about 4 %
     * slower (bench: 8 copies per packet, protect + GSO send) */
    queue->arena = PyMem_RawMalloc(QUEUE_ARENA + GSO_BUFFER);
    queue->gso_buffer = queue->arena ? queue->arena + QUEUE_ARENA : NULL;
    if (!queue->arena || !queue->gso_buffer || PyList_Append(bound, (PyObject *)queue) < 0) {
        Py_DECREF(queue);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    return (PyObject *)queue;
}

static PyObject *
unbind_loop(PyObject *module, PyObject *loop)
{
    Py_ssize_t where;
    Queue *queue = bound_queue(loop, &where);
    if (!queue)
        Py_RETURN_FALSE;
    Py_INCREF(queue);
    queue->scheduled = 0;
    queue_flush_all(queue); /* nothing queued is left behind */
    int status = 0;
    if (--queue->binds <= 0) {
        Py_CLEAR(queue->schedule); /* a queue no loop uses any more sends at once */
        /* look again: freeing the flushed Outputs could have run code that changed the list */
        if (bound_queue(loop, &where) == queue)
            status = PySequence_DelItem(bound, where);
    }
    Py_DECREF(queue);
    if (status < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
loop_queue(PyObject *module, PyObject *loop)
{
    Queue *queue = bound_queue(loop, NULL);
    if (!queue)
        Py_RETURN_NONE;
    Py_INCREF(queue);
    return (PyObject *)queue;
}

static PyObject *
open_outputs(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(open_descriptors);
}

static PyMethodDef module_methods[] = {
    {"bind_loop", (PyCFunction)(void (*)(void))bind_loop, METH_VARARGS | METH_KEYWORDS,
     "bind_loop(loop, schedule=None) -> Queue: queue the copies forwarded while `loop` runs, and have "
     "schedule(flush) (default loop.call_soon) arrange one flush per batch; counted, undone by unbind_loop()"},
    {"unbind_loop", (PyCFunction)unbind_loop, METH_O,
     "unbind_loop(loop) -> bool: flush the loop's queue and undo one bind_loop() (False: not bound)"},
    {"loop_queue", (PyCFunction)loop_queue, METH_O, "loop_queue(loop) -> Queue | None: the loop's queue"},
    {"open_outputs", (PyCFunction)open_outputs, METH_NOARGS, "Outputs whose socket descriptor is still open."},
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(copies, packet, offset, keyframe, ring=None) -> indices of copies that started, or None"},
    {NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "confero.media._fanout", "Compiled per-copy forwarding (see fanout.py).", -1,
    module_methods};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    if (PyType_Ready(&OutputType) < 0 || PyType_Ready(&CopyType) < 0 || PyType_Ready(&RingType) < 0 ||
        PyType_Ready(&NumberingType) < 0 || PyType_Ready(&QueueType) < 0)
        return NULL;
    if (!bound && !(bound = PyList_New(0)))
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    PyTypeObject *types[] = {&OutputType, &CopyType, &RingType, &NumberingType, &QueueType};
    const char *names[] = {"Output", "Copy", "Ring", "Numbering", "Queue"};
    for (int i = 0; i < 5; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "RING_SIZE", RING_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "YOUNG_PACKETS", YOUNG_PACKETS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0 ||
        PyModule_AddIntConstant(m, "MAX_EXTENSION", MAX_EXTENSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
