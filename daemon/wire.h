/* wire.h: protobuf payloads in and out of sd-bus messages, validated (size, syntax, unknown fields). */
#ifndef HYMBA_DAEMON_WIRE_H
#define HYMBA_DAEMON_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include <systemd/sd-bus.h>

/* D-Bus error names of org.hymba.Assistant1 (documented in the introspection XML). */
#define HYD_ERR(name) "org.hymba.Assistant1.Error." name
#define HYD_ERROR_NO_SUCH_SESSION   HYD_ERR("NoSuchSession")
#define HYD_ERROR_NO_SUCH_REQUEST   HYD_ERR("NoSuchRequest")
#define HYD_ERROR_INVALID_PAYLOAD   HYD_ERR("InvalidPayload")
#define HYD_ERROR_UNKNOWN_FIELD     HYD_ERR("UnknownField")
#define HYD_ERROR_PAYLOAD_TOO_LARGE HYD_ERR("PayloadTooLarge")
#define HYD_ERROR_INVALID_ARGUMENT  HYD_ERR("InvalidArgument")
#define HYD_ERROR_MESSAGE_TOO_LARGE HYD_ERR("MessageTooLarge")
#define HYD_ERROR_TOO_MANY_SESSIONS HYD_ERR("TooManySessions")
#define HYD_ERROR_TOO_MANY_REQUESTS HYD_ERR("TooManyRequests")
#define HYD_ERROR_SESSION_BUSY      HYD_ERR("SessionBusy")
#define HYD_ERROR_CONTEXT_FULL      HYD_ERR("ContextFull")
#define HYD_ERROR_ACCESS_DENIED     HYD_ERR("AccessDenied")
#define HYD_ERROR_SHUTTING_DOWN     HYD_ERR("ShuttingDown")
#define HYD_ERROR_INTERNAL          HYD_ERR("Internal")

/* Read the message's next argument, an "ay", as one message of type d.
 * Refuses payloads over max_bytes, bytes that do not parse, and fields the
 * schema does not know (at any depth), each with its own error name and a
 * message naming the type and the problem. */
int wire_read(sd_bus_message *m, const ProtobufCMessageDescriptor *d, uint32_t max_bytes,
              ProtobufCMessage **out, sd_bus_error *error);
/* Append msg packed as an "ay" argument. */
int wire_append(sd_bus_message *m, const ProtobufCMessage *msg);
/* Reply to call with msg as its one "ay". */
int wire_reply(sd_bus_message *call, const ProtobufCMessage *msg);
/* Unknown field number in msg or any sub-message (the first found), 0 if none. */
uint32_t wire_unknown_field(const ProtobufCMessage *msg, const char **type_name);
bool wire_utf8_valid(const char *s, size_t n);

static inline void wire_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_wire_ __attribute__((cleanup(wire_freep)))

#endif
