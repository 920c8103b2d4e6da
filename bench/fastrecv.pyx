# cython: language_level=3, boundscheck=False, wraparound=False
"""The load client's compiled receive loop (``bench.loadclient`` uses it when it is built).

One epoll set holds every connection's socket; the event loop watches only that set's descriptor and
calls :meth:`Receiver.drain`, which reads each ready socket with ``recvmsg`` (for its ``SO_TIMESTAMPNS``
kernel receive time) into one buffer. A read that is exactly one whole unmasked text or binary frame
holding one benchmark message is counted here, in C: its latency goes into the tag's histogram and the
connection's counts, and no Python object is made. Every other read (the upgrade, handshakes,
completions, echoes, pings, a frame split over reads, the end of the stream) is handed to the
connection's ``on_data(data, rx_ns)`` exactly as the pure-Python reader would see it; ``on_data``
returns whether the connection's next read may take the compiled path (upgraded, nothing buffered).

Per connection the receiver writes into two ``array('q')`` buffers the Python side owns: the tally
``[count, count_after, subscribed_at]`` and the tag's latency histogram (``bench.histogram`` buckets).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdlib cimport calloc, free
from libc.string cimport memchr, memcmp, memcpy, memset

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    ssize_t recvmsg(int fd, msghdr *msg, int flags)
    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    enum:
        SOL_SOCKET
        SO_TIMESTAMPNS

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

cdef enum:
    RECEIVE_BYTES = 256 * 1024
    CONTROL_BYTES = 64
    MAX_EVENTS = 1024
    HISTOGRAM_BUCKETS = 64 * 48
    RS = 0x1E

# What a benchmark message must look like besides carrying "bt": (the kinds of bench.loadclient).
KIND_SIGNALR = 1  # one hub record: the only record separator is the last byte
KIND_SOCKETIO = 2  # an event packet: starts with 42
KIND_RAW = 3  # the bare peer's text: nothing more

cdef struct Slot:
    long long *tally  # count, count_after, subscribed_at
    long long *histogram
    int kind  # 0: not registered
    int fast  # the next read may be counted here


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef inline int bucket(long long value_us) noexcept nogil:
    """bench.histogram.bucket."""
    if value_us < 64:
        return <int>value_us if value_us > 0 else 0
    cdef int shift = (64 - __builtin_clzll(<unsigned long long>value_us)) - 6
    return shift * 64 + <int>(value_us >> shift)


cdef inline const unsigned char *find_bt(const unsigned char *data, Py_ssize_t length) noexcept nogil:
    """The first byte after ``"bt":`` in ``data``, or NULL."""
    cdef Py_ssize_t index
    for index in range(length - 4):
        if data[index] == 34 and memcmp(data + index, b'"bt":', 5) == 0:
            return data + index + 5
    return NULL


cdef class Receiver:
    """One epoll set for many sockets; see the module's docstring."""

    cdef int epoll_fd
    cdef int max_fds
    cdef Slot *slots
    cdef unsigned char *buffer
    cdef dict owners  # fd -> (connection, tally view, histogram view): keeps what the slots point into
    cdef public long long fast_reads
    cdef public long long handed_over

    def __cinit__(self, int max_fds):
        self.epoll_fd = -1
        self.max_fds = max_fds
        self.slots = <Slot *>calloc(max_fds, sizeof(Slot))
        self.buffer = <unsigned char *>calloc(RECEIVE_BYTES, 1)
        if self.slots == NULL or self.buffer == NULL:
            raise MemoryError()
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.epoll_fd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.owners = {}

    def __dealloc__(self):
        if self.epoll_fd >= 0:
            close(self.epoll_fd)
        free(self.slots)
        free(self.buffer)

    def fileno(self) -> int:
        return self.epoll_fd

    def add(self, int fd, object connection, int kind, object tally, object histogram):
        """Watch ``fd``; ``connection.on_data`` gets every read the compiled path does not take."""
        if fd < 0 or fd >= self.max_fds:
            raise ValueError(f"descriptor {fd} outside 0..{self.max_fds - 1}")
        if kind not in (KIND_SIGNALR, KIND_SOCKETIO, KIND_RAW):
            raise ValueError(f"unknown kind {kind}")
        cdef long long[::1] tally_view = tally
        cdef long long[::1] histogram_view = histogram
        if tally_view.shape[0] != 3 or histogram_view.shape[0] != HISTOGRAM_BUCKETS:
            raise ValueError("tally must hold 3 counters and the histogram every bucket")
        cdef epoll_event event
        event.events = EPOLLIN
        event.data.fd = fd
        if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0:
            raise OSError(errno, "epoll_ctl(ADD) failed")
        self.owners[fd] = (connection, tally_view, histogram_view)
        self.slots[fd].tally = &tally_view[0]
        self.slots[fd].histogram = &histogram_view[0]
        self.slots[fd].kind = kind
        self.slots[fd].fast = 0

    def remove(self, int fd):
        """Stop watching ``fd`` (before it is closed); a descriptor not watched is ignored."""
        if fd < 0 or fd >= self.max_fds or self.slots[fd].kind == 0:
            return
        epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, fd, NULL)
        memset(&self.slots[fd], 0, sizeof(Slot))
        del self.owners[fd]

    def close(self):
        for fd in list(self.owners):
            self.remove(fd)
        if self.epoll_fd >= 0:
            close(self.epoll_fd)
            self.epoll_fd = -1

    def drain(self):
        """Read every socket that is ready now (the event loop's reader callback for :meth:`fileno`)."""
        cdef epoll_event events[MAX_EVENTS]
        cdef int ready = epoll_wait(self.epoll_fd, events, MAX_EVENTS, 0)
        cdef int index
        for index in range(ready):
            self._read(events[index].data.fd)

    cdef int _read(self, int fd) except -1:
        cdef Slot *slot = &self.slots[fd]
        if slot.kind == 0:
            return 0  # removed by an earlier read of this batch
        cdef iovec vector
        cdef msghdr message
        cdef unsigned char control[CONTROL_BYTES]
        cdef cmsghdr *header
        cdef timespec stamp
        cdef long long rx_ns = 0
        vector.iov_base = self.buffer
        vector.iov_len = RECEIVE_BYTES
        memset(&message, 0, sizeof(msghdr))
        message.msg_iov = &vector
        message.msg_iovlen = 1
        message.msg_control = control
        message.msg_controllen = CONTROL_BYTES
        cdef ssize_t received = recvmsg(fd, &message, 0)
        if received < 0 and (errno == EAGAIN or errno == EINTR):
            return 0
        header = CMSG_FIRSTHDR(&message)
        while header != NULL:
            if header.cmsg_level == SOL_SOCKET and header.cmsg_type == SO_TIMESTAMPNS:
                memcpy(&stamp, CMSG_DATA(header), sizeof(timespec))
                rx_ns = stamp.tv_sec * 1000000000LL + stamp.tv_nsec
            header = CMSG_NXTHDR(&message, header)
        if received > 0 and slot.fast and self._count(slot, received, rx_ns):
            self.fast_reads += 1
            return 0
        self.handed_over += 1
        connection = self.owners[fd][0]
        data = PyBytes_FromStringAndSize(<char *>self.buffer, received) if received > 0 else b""
        fast = connection.on_data(data, rx_ns)
        slot = &self.slots[fd]  # on_data may have removed it (or another descriptor)
        if slot.kind != 0:
            slot.fast = 1 if fast else 0
        return 0

    cdef bint _count(self, Slot *slot, Py_ssize_t received, long long rx_ns) noexcept:
        """Count ``self.buffer[:received]`` when it is one whole frame with one benchmark message."""
        cdef const unsigned char *data = self.buffer
        if received < 2 or (data[0] != 0x81 and data[0] != 0x82):
            return False
        cdef Py_ssize_t length = data[1]
        cdef Py_ssize_t start = 2
        if length == 126:
            if received < 4:
                return False
            length = (data[2] << 8) | data[3]
            start = 4
        elif length > 126:  # a 64-bit length, or the mask bit a server must not set
            return False
        if received != start + length:
            return False
        cdef const unsigned char *payload = data + start
        if slot.kind == KIND_SIGNALR:
            if length == 0 or payload[length - 1] != RS:
                return False
            if memchr(payload, RS, length - 1) != NULL:
                return False
        elif slot.kind == KIND_SOCKETIO:
            if length < 2 or payload[0] != 0x34 or payload[1] != 0x32:
                return False
        cdef const unsigned char *digits = find_bt(payload, length)
        if digits == NULL:
            return False
        cdef const unsigned char *end = payload + length
        cdef long long sent = 0
        while digits < end and 0x30 <= digits[0] <= 0x39:
            sent = sent * 10 + (digits[0] - 0x30)
            digits += 1
        if digits >= end or digits[0] != 0x2C:  # bench.loadclient reads up to the next comma
            return False
        slot.histogram[bucket((rx_ns - sent) // 1000)] += 1
        slot.tally[0] += 1
        if sent >= slot.tally[2]:
            slot.tally[1] += 1
        return True

