/*
 * confero.media._fanout: the per-copy forwarding hot path in C.
 *
 * The same engine as confero/media/fanout.py (the pure-Python fallback), with the same API:
 *
 *   Output(fd, host, port, srtp_session, srtp_protect, keep)
 *       One subscriber connection's send side: a dup() of the nominated socket, the remote
 *       address, and libsrtp's srtp_t with the address of srtp_protect (both taken from
 *       pylibsrtp by aiortc_hooks, the only module that knows where they are). `keep` is the
 *       pylibsrtp Session that owns the srtp_t; holding it keeps the session alive.
 *   Ring()
 *       One UpTrack's retransmission ring (the packets as received), shared by its copies.
 *   Copy(ssrc, payload_type, extension, ring, rtx_ssrc, rtx_payload_type, next_seq, ...)
 *       One DownTrack's rewrite state; answers NACKs from the ring with its own header.
 *   fanout(copies, packet, offset, keyframe, ring=None) -> list[int] | None
 *       Remember one decrypted RTP packet in the ring, then rewrite and send it to every
 *       copy; returns the indices of copies that started on this packet (a keyframe), or None.
 *
 * Per copy: header rewrite into a reused buffer, then either srtp_protect + sendto at once, or
 * (with a scheduler, see "send queue") a place in the Output's queue, sent at the end of the
 * loop iteration as UDP GSO runs. No Python objects are created per copy.
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

typedef int (*srtp_protect_fn)(void *ctx, void *header, int *length);

/* One reused buffer for building and protecting: the event loop is single-threaded and
 * nothing here releases the GIL. */
static uint8_t scratch[MAX_PACKET + SRTP_TRAILER];

/* Descriptors held by Outputs (tests prove it returns to zero: nothing leaked). */
static long open_descriptors = 0;

/* ------------------------------------------------------------------------------ Output */

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
    int head;                     /* this Output's queued packets: first and last entry, -1: none */
    int tail;
} Output;

/* ------------------------------------------------------------------ send queue (batching)
 *
 * With a scheduler set (the Router sets `loop.call_soon(flush)`), copies are not sent at once:
 * their plaintext is queued, per Output in order, until the end of the event loop's I/O phase.
 * flush() then sends each Output's run of packets of (about) the same size as one sendmsg()
 * with UDP_SEGMENT (UDP GSO, Linux 4.18+): the kernel builds, routes and delivers them as one
 * unit, cutting the per-datagram cost (bench/sendpath.py). Packets shorter than the run by at most
 * PAD_MAX bytes are brought to its size with RTP padding (RFC 3550 5.1); a shorter packet may
 * end a run unpadded. Under light load the loop wakes per packet and runs hold one packet; the
 * busier the loop, the longer the runs; but no copy waits more than MAX_DELAY_NS (1 ms) for
 * its flush, and a flush sends at most MAX_BATCH copies (sending takes ~1-3 µs per copy, so
 * one flush stays near a millisecond). Without a scheduler every copy is sent immediately.
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

static uint8_t queue_arena[QUEUE_ARENA];
static size_t queue_used = 0;
static Entry entries[MAX_BATCH];
static int n_entries = 0;
static Output *dirty[MAX_BATCH]; /* strong references until flushed */
static int n_dirty = 0;
static PyObject *scheduler = NULL; /* called once when the queue stops being empty */
static int flush_scheduled = 0;
static long long oldest_ns = 0; /* when the queue's first entry was queued */
static int gso_enabled = 1; /* cleared when the kernel keeps refusing UDP_SEGMENT */
static int gso_failures = 0;
/* one segmented send: up to MAX_SEGMENTS packets of up to MAX_PACKET bytes after protection */
static uint8_t gso_buffer[MAX_GSO_BYTES + MAX_PACKET + SRTP_TRAILER];

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
    if (port <= 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    /* Numeric addresses only (no lookup); IPv6 scope ids ("fe80::1%eth0") are understood. */
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, NULL, &hints, &found) != 0 || !found || found->ai_addrlen > sizeof(self->addr)) {
        if (found)
            freeaddrinfo(found);
        PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
        return -1;
    }
    memset(&self->addr, 0, sizeof(self->addr));
    memcpy(&self->addr, found->ai_addr, found->ai_addrlen);
    self->addrlen = (socklen_t)found->ai_addrlen;
    freeaddrinfo(found);
    if (self->addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&self->addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&self->addr)->sin6_port = htons((uint16_t)port);
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

/* Protect `n` bytes already in `scratch` and send them. Returns 0 on success. */
static inline int
output_send_scratch(Output *self, int n)
{
    if (self->fd < 0)
        return -1;
    int length = n;
    if (self->protect(self->srtp, scratch, &length) != 0) {
        self->errors++;
        return -1;
    }
    return output_sendto(self, scratch, length);
}

static void flush_all(void);

static inline long long
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Queue `n` plaintext bytes from `scratch` for `self`, or send them now without a scheduler.
 * Returns 0 when queued or sent. */
static int
output_queue_scratch(Output *self, int n)
{
    if (!scheduler)
        return output_send_scratch(self, n);
    if (self->fd < 0)
        return -1;
    if (n_entries >= MAX_BATCH || queue_used + (size_t)n > QUEUE_ARENA)
        flush_all();
    if (n_entries == 0)
        oldest_ns = now_ns();
    int index = n_entries++;
    Entry *entry = &entries[index];
    entry->offset = (uint32_t)queue_used;
    entry->length = (uint16_t)n;
    entry->next = -1;
    memcpy(queue_arena + queue_used, scratch, (size_t)n);
    queue_used += (size_t)n;
    if (self->head < 0) {
        Py_INCREF(self);
        dirty[n_dirty++] = self;
        self->head = index;
    } else {
        entries[self->tail].next = index;
    }
    self->tail = index;
    if (!flush_scheduled) {
        flush_scheduled = 1;
        PyObject *result = PyObject_CallNoArgs(scheduler);
        if (!result) {
            /* reported once; from now on copies go out at once, and none is left behind */
            PyErr_WriteUnraisable(scheduler);
            Py_CLEAR(scheduler);
            flush_all();
        } else {
            Py_DECREF(result);
        }
    }
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

/* Send `total` bytes of `gso_buffer` made of segments of `segment` bytes (the last may be
 * shorter), `count` of them. Falls back to one sendto per segment if GSO is refused. */
static void
output_send_segments(Output *self, int segment, int count, int total)
{
    if (count == 1) {
        output_sendto(self, gso_buffer, total);
        return;
    }
    if (gso_enabled) {
        union {
            char buf[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {gso_buffer, (size_t)total};
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
            gso_failures = 0;
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED) {
            self->errors += (unsigned long long)count;
            return;
        }
        /* EINVAL, EIO, ENOPROTOOPT...: this route or kernel refuses UDP GSO. Send these one by
         * one; after repeated refusals with no success, stop trying. */
        if (++gso_failures >= GSO_FAILURES_MAX)
            gso_enabled = 0;
    }
    for (int offset = 0; offset < total; offset += segment)
        output_sendto(self, gso_buffer + offset, total - offset < segment ? total - offset : segment);
}

/* Protect and send one Output's queued packets, in order, as runs of equal-sized segments. */
static void
output_flush(Output *self)
{
    int index = self->head;
    while (index >= 0) {
        /* choose the run: [index, end) */
        int size = entries[index].length; /* the run's segment size before protection */
        int min_size = size;
        int count = 1;
        int end = entries[index].next;
        int padding_ok = existing_padding(queue_arena + entries[index].offset, size) + PAD_MAX <= 255;
        int last_short = 0;
        while (end >= 0 && count < MAX_SEGMENTS && gso_enabled && size + TAG_MAX <= MAX_GSO_SEGMENT) {
            int length = entries[end].length;
            const uint8_t *p = queue_arena + entries[end].offset;
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
            memcpy(p, queue_arena + entries[k].offset, (size_t)length);
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
                output_send_segments(self, segment, written, total);
                memmove(gso_buffer, p, (size_t)out);
                written = 0;
                total = 0;
                segment = out;
            }
            written++;
            total += out;
        }
        if (written)
            output_send_segments(self, segment, written, total);
        index = end;
    }
}

static void
flush_all(void)
{
    int count = n_dirty;
    for (int i = 0; i < count; i++) {
        Output *output = dirty[i];
        if (output->fd >= 0 && output->srtp)
            output_flush(output);
        output->head = output->tail = -1;
    }
    n_entries = 0;
    n_dirty = 0;
    queue_used = 0;
    flush_scheduled = 0;
    for (int i = 0; i < count; i++)
        Py_DECREF(dirty[i]);
}

static PyObject *
Output_send(Output *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > MAX_PACKET) {
        PyBuffer_Release(&view);
        self->errors++;
        Py_RETURN_FALSE;
    }
    memcpy(scratch, view.buf, (size_t)view.len);
    int rc = output_send_scratch(self, (int)view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(rc == 0);
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

/* -------------------------------------------------------------------------------- Copy */

typedef struct {
    PyObject_HEAD
    Output *output; /* NULL until started */
    Ring *ring;     /* the UpTrack's ring; NULL: no retransmission (audio) */
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
    unsigned int seq_off;
    unsigned int ts_off;
    unsigned int next_seq;
    unsigned int next_ts;
    unsigned int rtx_seq;
    unsigned int last_seq;
    unsigned int last_ts;
    unsigned long long packets;
    unsigned long long octets;
    unsigned long long retransmitted;
    unsigned long long send_errors;
} Copy;

static void
copy_free_ring(Copy *self)
{
    Py_CLEAR(self->ring);
}

static int
Copy_init(Copy *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ssrc", "payload_type", "extension", "ring", "rtx_ssrc", "rtx_payload_type",
                             "next_seq", "next_ts", "rtx_seq", NULL};
    unsigned int ssrc, rtx_ssrc = 0, next_seq = 0, next_ts = 0, rtx_seq = 0;
    int payload_type, rtx_payload_type = -1;
    PyObject *ring = Py_None;
    Py_buffer ext;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Iiy*|OIiIII", kwlist, &ssrc, &payload_type, &ext, &ring,
                                     &rtx_ssrc, &rtx_payload_type, &next_seq, &next_ts, &rtx_seq))
        return -1;
    if (ring != Py_None && !PyObject_TypeCheck(ring, &RingType)) {
        PyBuffer_Release(&ext);
        PyErr_SetString(PyExc_TypeError, "ring must be a Ring or None");
        return -1;
    }
    if (ext.len > MAX_EXTENSION || ext.len % 4) {
        PyBuffer_Release(&ext);
        PyErr_SetString(PyExc_ValueError, "extension block must be a multiple of 4 bytes, at most 64");
        return -1;
    }
    if (payload_type < 0 || payload_type > 127 || rtx_payload_type > 127) {
        PyBuffer_Release(&ext);
        PyErr_SetString(PyExc_ValueError, "payload type out of range");
        return -1;
    }
    memcpy(self->ext, ext.buf, (size_t)ext.len);
    self->ext_len = (int)ext.len;
    PyBuffer_Release(&ext);
    self->ssrc = ssrc;
    self->payload_type = payload_type;
    self->rtx_ssrc = rtx_ssrc;
    self->rtx_payload_type = rtx_payload_type;
    self->b0 = 0x80 | (self->ext_len ? 0x10 : 0);
    self->waiting = 1;
    self->enabled = 1;
    self->next_seq = next_seq & 0xFFFF;
    self->next_ts = next_ts;
    self->rtx_seq = rtx_seq & 0xFFFF;
    copy_free_ring(self);
    if (ring != Py_None) {
        Py_INCREF(ring);
        self->ring = (Ring *)ring;
    }
    return 0;
}

static void
Copy_dealloc(Copy *self)
{
    copy_free_ring(self);
    Py_CLEAR(self->output);
    Py_TYPE(self)->tp_free((PyObject *)self);
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
    copy_free_ring(self);
    Py_RETURN_NONE;
}

static PyObject *
Copy_resync(Copy *self, PyObject *arg)
{
    long step = PyLong_AsLong(arg);
    if (step == -1 && PyErr_Occurred())
        return NULL;
    self->next_seq = (self->last_seq + 1) & 0xFFFF;
    self->next_ts = (uint32_t)(self->last_ts + (unsigned long)step);
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
copy_rebuild(Copy *self, unsigned int out_seq)
{
    if (((out_seq - self->begin_seq) & 0xFFFF) >= 0x8000)
        return 0; /* before our (re)start: another source, or offsets that no longer apply */
    unsigned int seq = (out_seq - self->seq_off) & 0xFFFF;
    Slot *slot = &self->ring->slots[seq & RING_MASK];
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
        put16(scratch + 2, self->rtx_seq);
        self->rtx_seq = (self->rtx_seq + 1) & 0xFFFF;
        put32(scratch + 8, self->rtx_ssrc);
        put16(scratch + header_len, out_seq);
    } else {
        scratch[1] = (uint8_t)((original[1] & 0x80) | self->payload_type);
        put16(scratch + 2, out_seq);
        put32(scratch + 8, self->ssrc);
    }
    put32(scratch + 4, (uint32_t)(get32(original + 4) + self->ts_off));
    if (self->ext_len)
        memcpy(scratch + 12, self->ext, (size_t)self->ext_len);
    memcpy(scratch + header_len + (rtx ? 2 : 0), original + slot->offset, (size_t)payload_len);
    return n;
}

static PyObject *
Copy_retransmit(Copy *self, PyObject *arg)
{
    if (!self->ring || !self->output || self->waiting)
        Py_RETURN_NONE;
    PyObject *seq_iter = PyObject_GetIter(arg);
    if (!seq_iter)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(seq_iter))) {
        long seq = PyLong_AsLong(item);
        Py_DECREF(item);
        if (seq == -1 && PyErr_Occurred()) {
            Py_DECREF(seq_iter);
            return NULL;
        }
        int n = copy_rebuild(self, (unsigned int)(seq & 0xFFFF));
        if (!n)
            continue;
        if (output_send_scratch(self->output, n) == 0)
            self->retransmitted++;
        else
            self->send_errors++;
    }
    Py_DECREF(seq_iter);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The per-copy hot path. Returns 1 when this copy started on this packet. */
static inline int
copy_write(Copy *self, const uint8_t *data, Py_ssize_t offset, Py_ssize_t size, int keyframe)
{
    unsigned int seq = ((unsigned)data[2] << 8) | data[3];
    uint32_t ts = get32(data + 4);
    int started = 0;
    if (self->waiting) {
        if (!keyframe || !self->enabled)
            return 0;
        self->seq_off = (self->next_seq - seq) & 0xFFFF;
        self->ts_off = (uint32_t)(self->next_ts - ts);
        self->start_seq = seq;
        self->begin_seq = self->next_seq & 0xFFFF;
        self->young = YOUNG_PACKETS;
        self->waiting = 0;
        started = 1;
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
    unsigned int out_seq = (seq + self->seq_off) & 0xFFFF;
    uint32_t out_ts = (uint32_t)(ts + self->ts_off);
    scratch[0] = self->b0 | (data[0] & 0x20);
    scratch[1] = (uint8_t)((data[1] & 0x80) | self->payload_type);
    put16(scratch + 2, out_seq);
    put32(scratch + 4, out_ts);
    put32(scratch + 8, self->ssrc);
    if (self->ext_len)
        memcpy(scratch + 12, self->ext, (size_t)self->ext_len);
    memcpy(scratch + header_len, data + offset, (size_t)payload_len);
    self->last_ts = out_ts;
    self->last_seq = out_seq;
    self->packets++;
    self->octets += (unsigned long long)payload_len;
    if (!self->output || output_queue_scratch(self->output, n) != 0)
        self->send_errors++;
    return started;
}

static PyObject *
Copy_get_has_ring(Copy *self, void *closure)
{
    return PyBool_FromLong(self->ring != NULL);
}

static PyMethodDef Copy_methods[] = {
    {"set_output", (PyCFunction)Copy_set_output, METH_O, "Send through this Output (None: stop sending)."},
    {"clear_ring", (PyCFunction)Copy_clear_ring, METH_NOARGS, "Free the retransmission ring."},
    {"resync", (PyCFunction)Copy_resync, METH_O,
     "Continue the numbering after the last packet (timestamp + step) from the next keyframe."},
    {"retransmit", (PyCFunction)Copy_retransmit, METH_O, "Resend these sequence numbers from the ring."},
    {NULL}};

static PyMemberDef Copy_members[] = {
    {"ssrc", T_UINT, offsetof(Copy, ssrc), READONLY, NULL},
    {"payload_type", T_INT, offsetof(Copy, payload_type), READONLY, NULL},
    {"waiting", T_BOOL, offsetof(Copy, waiting), 0, "waiting for a keyframe to start"},
    {"enabled", T_BOOL, offsetof(Copy, enabled), 0, "forwarding is on"},
    {"ts_off", T_UINT, offsetof(Copy, ts_off), READONLY, NULL},
    {"seq_off", T_UINT, offsetof(Copy, seq_off), READONLY, NULL},
    {"last_seq", T_UINT, offsetof(Copy, last_seq), READONLY, NULL},
    {"last_ts", T_UINT, offsetof(Copy, last_ts), READONLY, NULL},
    {"packets", T_ULONGLONG, offsetof(Copy, packets), READONLY, NULL},
    {"octets", T_ULONGLONG, offsetof(Copy, octets), READONLY, NULL},
    {"retransmitted", T_ULONGLONG, offsetof(Copy, retransmitted), READONLY, NULL},
    {"send_errors", T_ULONGLONG, offsetof(Copy, send_errors), READONLY, NULL},
    {NULL}};

static PyGetSetDef Copy_getset[] = {
    {"has_ring", (getter)Copy_get_has_ring, NULL, "the retransmission ring is allocated", NULL},
    {NULL}};

static PyTypeObject CopyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "confero.media._fanout.Copy",
    .tp_basicsize = sizeof(Copy),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Rewrite state and retransmission ring of one forwarded copy.",
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
    if (ring && size <= MAX_PACKET)
        ring_store(ring, data, size, offset);
    /* Under heavy load one loop iteration can take milliseconds: do not let the first copies
     * queued in it wait for its end. */
    if (n_entries && now_ns() - oldest_ns > MAX_DELAY_NS)
        flush_all();
    PyObject *started = NULL;
    Py_ssize_t count = PyList_GET_SIZE(copies);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(copies, i);
        if (Py_TYPE(item) != &CopyType && !PyObject_TypeCheck(item, &CopyType)) {
            Py_XDECREF(started);
            PyErr_SetString(PyExc_TypeError, "copies must hold Copy objects");
            return NULL;
        }
        if (copy_write((Copy *)item, data, offset, size, keyframe)) {
            if (!started && !(started = PyList_New(0)))
                return NULL;
            PyObject *index = PyLong_FromSsize_t(i);
            if (!index || PyList_Append(started, index) < 0) {
                Py_XDECREF(index);
                Py_DECREF(started);
                return NULL;
            }
            Py_DECREF(index);
        }
    }
    if (started)
        return started;
    Py_RETURN_NONE;
}

static PyObject *
open_outputs(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(open_descriptors);
}

static PyObject *
set_scheduler(PyObject *module, PyObject *arg)
{
    if (arg != Py_None && !PyCallable_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "set_scheduler() takes a callable or None");
        return NULL;
    }
    flush_all(); /* nothing queued under the old scheduler is left behind */
    if (arg == Py_None) {
        Py_CLEAR(scheduler);
    } else {
        Py_INCREF(arg);
        Py_XSETREF(scheduler, arg);
    }
    Py_RETURN_NONE;
}

static PyObject *
flush(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    flush_all();
    Py_RETURN_NONE;
}

static PyObject *
queued(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(n_entries);
}

static PyObject *
get_gso_enabled(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(gso_enabled);
}

static PyMethodDef module_methods[] = {
    {"set_scheduler", (PyCFunction)set_scheduler, METH_O,
     "set_scheduler(callable | None): queue copies and have callable() arrange one flush() (None: send at once)"},
    {"flush", (PyCFunction)flush, METH_NOARGS, "Send every queued copy (segmented where possible)."},
    {"queued", (PyCFunction)queued, METH_NOARGS, "Copies waiting for flush()."},
    {"gso_enabled", (PyCFunction)get_gso_enabled, METH_NOARGS, "False once the kernel refused UDP_SEGMENT."},
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
    if (PyType_Ready(&OutputType) < 0 || PyType_Ready(&CopyType) < 0 || PyType_Ready(&RingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    Py_INCREF(&OutputType);
    Py_INCREF(&CopyType);
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Output", (PyObject *)&OutputType) < 0 ||
        PyModule_AddObject(m, "Copy", (PyObject *)&CopyType) < 0 ||
        PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddIntConstant(m, "RING_SIZE", RING_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "YOUNG_PACKETS", YOUNG_PACKETS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
