/* wire.c: unpack + validate protobuf payloads from D-Bus "ay" arguments, and pack replies. */
#include "daemon/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint32_t wire_unknown_field(const ProtobufCMessage *msg, const char **type_name)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;

    if (msg->n_unknown_fields) {
        *type_name = d->name;
        return msg->unknown_fields[0].tag;
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)msg;
        uint32_t tag;

        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if ((tag = wire_unknown_field(items[k], type_name)))
                    return tag;
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;                      /* another member of the oneof is set */
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
        if (sub && (tag = wire_unknown_field(sub, type_name)))
            return tag;
    }
    return 0;
}

int wire_read(sd_bus_message *m, const ProtobufCMessageDescriptor *d, uint32_t max_bytes,
              ProtobufCMessage **out, sd_bus_error *error)
{
    const void *data = NULL;
    size_t size = 0;
    ProtobufCMessage *msg;
    const char *type_name = NULL;
    uint32_t tag;
    int r;

    r = sd_bus_message_read_array(m, 'y', &data, &size);
    if (r < 0)
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "expected a byte array (ay) holding a %s", d->name);
    if (size > max_bytes)
        return sd_bus_error_setf(error, HYD_ERROR_PAYLOAD_TOO_LARGE,
                                 "%s payload is %zu bytes; the limit is %u (max_payload_bytes)", d->name, size, max_bytes);
    msg = protobuf_c_message_unpack(d, NULL, size, data);
    if (!msg)
        return sd_bus_error_setf(error, HYD_ERROR_INVALID_PAYLOAD,
                                 "the %zu bytes are not a valid %s message (malformed protobuf or a field of the wrong type)",
                                 size, d->name);
    tag = wire_unknown_field(msg, &type_name);
    if (tag) {
        r = sd_bus_error_setf(error, HYD_ERROR_UNKNOWN_FIELD,
                              "%s has field number %u, which protocol version 1 does not define", type_name, tag);
        protobuf_c_message_free_unpacked(msg, NULL);
        return r;
    }
    *out = msg;
    return 0;
}

int wire_append(sd_bus_message *m, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    int r;

    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    r = sd_bus_message_append_array(m, 'y', buf, n);
    free(buf);
    return r;
}

int wire_reply(sd_bus_message *call, const ProtobufCMessage *msg)
{
    sd_bus_message *reply = NULL;
    int r;

    r = sd_bus_message_new_method_return(call, &reply);
    if (r >= 0)
        r = wire_append(reply, msg);
    if (r >= 0)
        r = sd_bus_send(NULL, reply, NULL);
    sd_bus_message_unref(reply);
    return r;
}

bool wire_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    while (p < end) {
        unsigned c = *p, len;
        uint32_t cp;
        if (c < 0x80) {
            if (c == 0)
                return false;      /* an embedded NUL would cut the text short */
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return false;
        if ((size_t)(end - p) < len)
            return false;
        for (unsigned k = 1; k < len; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        p += len;
    }
    return true;
}
