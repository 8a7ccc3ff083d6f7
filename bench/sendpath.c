/*
 * The kernel's cost of sending one forwarded copy on loopback, three ways.
 *
 *   sendpath MODE BURST [SIZE]
 *
 * MODE: sendto   one sendto() per datagram
 *       sendmmsg one sendmmsg() per burst (BURST datagrams to the same socket)
 *       gso      one sendmsg() per burst with UDP_SEGMENT (UDP GSO)
 *
 * Eight sending sockets each send BURST datagrams of SIZE bytes (default 1200) to their own
 * receiving socket, then the sender sleeps 300 µs; a child process drains the receivers with
 * epoll + recvmmsg, sleeping when idle as a real subscriber does. Prints the sender's CPU time
 * (user + system, getrusage) per datagram. Driven by bench/sendpath.py; loopback only, bounded
 * (96,000 datagrams per socket at most).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define SOCKETS 8
#define PER_SOCKET 12000

static double
cpu_seconds(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sendpath sendto|sendmmsg|gso BURST [SIZE]\n");
        return 2;
    }
    const char *mode = argv[1];
    int burst = atoi(argv[2]);
    int size = argc > 3 ? atoi(argv[3]) : 1200;
    if (burst < 1 || burst > 64 || size < 12 || size > 1400 || burst * size > 60000) {
        fprintf(stderr, "BURST 1-64, SIZE 12-1400, BURST x SIZE <= 60000\n");
        return 2;
    }
    int receivers[SOCKETS], senders[SOCKETS];
    struct sockaddr_in addresses[SOCKETS];
    for (int i = 0; i < SOCKETS; i++) {
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t length = sizeof(addresses[i]);
        int buffer = 4 << 20;
        receivers[i] = socket(AF_INET, SOCK_DGRAM, 0);
        senders[i] = socket(AF_INET, SOCK_DGRAM, 0);
        if (receivers[i] < 0 || senders[i] < 0 || bind(receivers[i], (void *)&any, sizeof(any)) < 0 ||
            bind(senders[i], (void *)&any, sizeof(any)) < 0 ||
            getsockname(receivers[i], (void *)&addresses[i], &length) < 0) {
            perror("socket");
            return 1;
        }
        setsockopt(receivers[i], SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
    }
    pid_t child = fork();
    if (child == 0) {
        static char buffers[64][2048];
        struct mmsghdr messages[64];
        struct iovec iovs[64];
        for (int i = 0; i < 64; i++) {
            iovs[i].iov_base = buffers[i];
            iovs[i].iov_len = sizeof(buffers[i]);
            memset(&messages[i], 0, sizeof(messages[i]));
            messages[i].msg_hdr.msg_iov = &iovs[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        int poller = epoll_create1(0);
        for (int i = 0; i < SOCKETS; i++) {
            struct epoll_event event = {.events = EPOLLIN, .data.fd = receivers[i]};
            epoll_ctl(poller, EPOLL_CTL_ADD, receivers[i], &event);
        }
        alarm(60); /* bounded even if the parent dies */
        for (;;) {
            struct epoll_event events[SOCKETS];
            int ready = epoll_wait(poller, events, SOCKETS, -1);
            for (int j = 0; j < ready; j++)
                while (recvmmsg(events[j].data.fd, messages, 64, MSG_DONTWAIT, NULL) > 0)
                    ;
        }
    }
    static char payload[64 * 1400];
    memset(payload, 0x5a, sizeof(payload));
    struct mmsghdr batch[64];
    struct iovec batch_iov[64];
    struct timespec pause = {0, 300000};
    usleep(100000);
    long sent = 0, failed = 0;
    double start = cpu_seconds();
    for (int round = 0; round < PER_SOCKET / burst; round++) {
        for (int k = 0; k < SOCKETS; k++) {
            struct sockaddr *to = (struct sockaddr *)&addresses[k];
            socklen_t to_length = sizeof(addresses[k]);
            if (!strcmp(mode, "sendto")) {
                for (int b = 0; b < burst; b++) {
                    if (sendto(senders[k], payload, (size_t)size, MSG_DONTWAIT, to, to_length) < 0)
                        failed++;
                    else
                        sent++;
                }
            } else if (!strcmp(mode, "sendmmsg")) {
                for (int b = 0; b < burst; b++) {
                    batch_iov[b].iov_base = payload + b * size;
                    batch_iov[b].iov_len = (size_t)size;
                    memset(&batch[b], 0, sizeof(batch[b]));
                    batch[b].msg_hdr.msg_name = to;
                    batch[b].msg_hdr.msg_namelen = to_length;
                    batch[b].msg_hdr.msg_iov = &batch_iov[b];
                    batch[b].msg_hdr.msg_iovlen = 1;
                }
                int n = sendmmsg(senders[k], batch, (unsigned)burst, MSG_DONTWAIT);
                sent += n > 0 ? n : 0;
                failed += burst - (n > 0 ? n : 0);
            } else {
                union {
                    char buf[CMSG_SPACE(sizeof(uint16_t))];
                    struct cmsghdr align;
                } control;
                struct iovec iov = {payload, (size_t)(size * burst)};
                struct msghdr message = {.msg_name = to, .msg_namelen = to_length, .msg_iov = &iov, .msg_iovlen = 1,
                                         .msg_control = control.buf, .msg_controllen = sizeof(control.buf)};
                struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
                cmsg->cmsg_level = SOL_UDP;
                cmsg->cmsg_type = UDP_SEGMENT;
                cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t segment = (uint16_t)size;
                memcpy(CMSG_DATA(cmsg), &segment, sizeof(segment));
                if (sendmsg(senders[k], &message, MSG_DONTWAIT) < 0) {
                    if (errno != EAGAIN && errno != ENOBUFS) {
                        perror("sendmsg UDP_SEGMENT");
                        kill(child, SIGKILL);
                        return 1;
                    }
                    failed += burst;
                } else {
                    sent += burst;
                }
            }
        }
        nanosleep(&pause, NULL);
    }
    double used = cpu_seconds() - start;
    printf("%s %d %d %.3f %ld %ld\n", mode, burst, size, used / (double)(sent + failed) * 1e6, sent, failed);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}
