/* sysint-notify-wait.c: test helper for test-units.sh: plays systemd's notification socket.
 * Binds a datagram socket at PATH, prints each message it receives, and exits 0 as soon as one
 * holds READY=1 (1 when SECONDS pass without it). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NOTIFY_MAX 4096                      /* bytes of one notification we read */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char buf[NOTIFY_MAX + 1];
    long deadline;
    int fd;

    if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "usage: %s SOCKET-PATH SECONDS\n", argv[0]);
        return 2;
    }
    strcpy(sa.sun_path, argv[1]);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "sysint-notify-wait: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    deadline = now_ms() + atol(argv[2]) * 1000L;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        long left = deadline - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t n = recv(fd, buf, NOTIFY_MAX, 0);
        if (n < 0)
            continue;
        buf[n] = 0;
        printf("%s\n", buf);
        fflush(stdout);
        if (!strncmp(buf, "READY=1", 7) || strstr(buf, "\nREADY=1"))
            return 0;
    }
    fprintf(stderr, "sysint-notify-wait: no READY=1 within %s s\n", argv[2]);
    return 1;
}
