/* sysint-bus-peer.c: test helper for test-policy.sh: takes a bus name on a given bus and answers
 * every method call sent to it with the string "pong", so the bus policy can be probed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

/* Reply to each method call addressed to this connection; leave the rest to sd-bus. */
static int peer_answer(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
    (void)userdata;
    (void)ret_error;
    if (!sd_bus_message_is_method_call(m, NULL, NULL))
        return 0;
    if (sd_bus_message_get_expect_reply(m) <= 0)
        return 1;
    return sd_bus_reply_method_return(m, "s", "pong") < 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    sd_bus *bus = NULL;
    int r;

    if (argc != 3) {
        fprintf(stderr, "usage: %s BUS-ADDRESS NAME\n", argv[0]);
        return 2;
    }
    r = sd_bus_new(&bus);
    if (r >= 0)
        r = sd_bus_set_address(bus, argv[1]);
    if (r >= 0)
        r = sd_bus_set_bus_client(bus, 1);
    if (r >= 0)
        r = sd_bus_start(bus);
    if (r < 0) {
        fprintf(stderr, "sysint-bus-peer: cannot connect to %s: %s\n", argv[1], strerror(-r));
        return 1;
    }
    r = sd_bus_request_name(bus, argv[2], 0);
    if (r < 0) {
        /* The policy's answer, e.g. EACCES: reported by exit status 3. */
        printf("denied: %s\n", strerror(-r));
        sd_bus_flush_close_unref(bus);
        return 3;
    }
    r = sd_bus_add_filter(bus, NULL, peer_answer, NULL);
    if (r < 0) {
        fprintf(stderr, "sysint-bus-peer: filter: %s\n", strerror(-r));
        return 1;
    }
    printf("owner\n");
    fflush(stdout);
    for (;;) {
        r = sd_bus_process(bus, NULL);
        if (r < 0)
            break;
        if (r == 0 && sd_bus_wait(bus, UINT64_MAX) < 0)
            break;
    }
    sd_bus_flush_close_unref(bus);
    return r == -ECONNRESET || r == -ENOTCONN ? 0 : 1;
}
