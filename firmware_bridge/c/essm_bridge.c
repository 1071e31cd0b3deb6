/* essm_bridge.c - see essm_bridge.h. C99, no allocation, no library calls beyond <stddef.h>. */
#include "essm_bridge.h"

uint32_t eb_crc32c(uint32_t crc, const uint8_t *data, size_t n)
{
    /* Bitwise reflected CRC-32C (poly 0x1EDC6F41 -> 0x82F63B78): small code, no table.
     * A firmware with a CRC unit or the ARMv8 CRC32C instruction can swap this out. */
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

size_t eb_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t code_at = 0, o = 1, i;
    uint8_t code = 1;
    if (cap < 1) return 0;
    for (i = 0; i < n; i++) {
        if (in[i] != 0) {
            if (o >= cap) return 0;
            out[o++] = in[i];
            if (++code != 0xFF) continue; /* a full block of 254 ends here: no implied zero */
            if (i + 1 == n) break;        /* input ends on a full block: no empty trailing block */
        }
        out[code_at] = code;
        if (o >= cap) return 0;
        code_at = o++;
        code = 1;
    }
    out[code_at] = code;
    return o;
}

size_t eb_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t i = 0, o = 0, j;
    while (i < n) {
        uint8_t code = in[i];
        if (code == 0 || i + code > n) return (size_t)-1;
        for (j = 1; j < code; j++) {
            if (in[i + j] == 0 || o >= cap) return (size_t)-1;
            out[o++] = in[i + j];
        }
        i += code;
        if (code != 0xFF && i < n) {
            if (o >= cap) return (size_t)-1;
            out[o++] = 0;
        }
    }
    return o;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16); }

void eb_header_pack(const eb_header_t *h, uint8_t out[EB_HEADER_SIZE])
{
    out[0] = h->version; out[1] = h->type; out[2] = h->flags;
    put16(out + 3, h->seq); put32(out + 5, h->timestamp_us); put16(out + 9, h->len);
}

void eb_header_unpack(const uint8_t in[EB_HEADER_SIZE], eb_header_t *h)
{
    h->version = in[0]; h->type = in[1]; h->flags = in[2];
    h->seq = get16(in + 3); h->timestamp_us = get32(in + 5); h->len = get16(in + 9);
}

size_t eb_frame_encode(eb_header_t *h, const uint8_t *payload, uint16_t len, uint8_t *out, size_t cap)
{
    uint8_t raw[EB_MAX_RAW];
    size_t i, n;
    if (len > EB_MAX_PAYLOAD) return 0;
    h->version = EB_PROTOCOL_VERSION;
    h->len = len;
    eb_header_pack(h, raw);
    for (i = 0; i < len; i++) raw[EB_HEADER_SIZE + i] = payload[i];
    put32(raw + EB_HEADER_SIZE + len, eb_crc32c(0, raw, EB_HEADER_SIZE + len));
    n = eb_cobs_encode(raw, EB_HEADER_SIZE + len + EB_CRC_SIZE, out, cap);
    if (n == 0 || n + 1 > cap) return 0;
    out[n] = 0;
    return n + 1;
}

/* Payload length check per type: fixed sizes exactly, variable ones by their count field. */
static enum eb_status check_payload(uint8_t type, const uint8_t *p, uint16_t len)
{
    switch (type) {
    case EB_HELLO: return len == 36 ? EB_OK : EB_ERR_PAYLOAD;
    case EB_HEARTBEAT: return len == 8 ? EB_OK : EB_ERR_PAYLOAD;
    case EB_TELEMETRY: return len == 24 ? EB_OK : EB_ERR_PAYLOAD;
    case EB_SET_BUDGET: return len == 2 ? EB_OK : EB_ERR_PAYLOAD;
    case EB_BUDGET_REPORT: return len == 8 ? EB_OK : EB_ERR_PAYLOAD;
    case EB_ERROR: return (len >= 4 && len <= 68) ? EB_OK : EB_ERR_PAYLOAD;
    case EB_SENSOR_FRAME: {
        uint16_t count;
        uint8_t fmt, ch;
        if (len < 8) return EB_ERR_PAYLOAD;
        fmt = p[0]; ch = p[1]; count = get16(p + 2);
        if ((fmt != 1 && fmt != 2) || ch == 0 || count % ch) return EB_ERR_PAYLOAD;
        return (uint32_t)len == 8u + (uint32_t)count * (fmt == 1 ? 4u : 2u) ? EB_OK : EB_ERR_PAYLOAD;
    }
    case EB_OUTPUT:
        if (len < 5) return EB_ERR_PAYLOAD;
        return (uint32_t)len == 5u + 4u * get16(p + 3) ? EB_OK : EB_ERR_PAYLOAD;
    default: return EB_ERR_UNKNOWN_TYPE;
    }
}

enum eb_status eb_frame_decode(const uint8_t *seg, size_t n, uint8_t *raw, eb_header_t *h,
                               const uint8_t **payload)
{
    size_t m;
    uint32_t crc;
    if (n > EB_MAX_ENCODED) return EB_ERR_OVERSIZE;
    m = eb_cobs_decode(seg, n, raw, EB_MAX_RAW);
    if (m == (size_t)-1) return EB_ERR_COBS;
    if (m < EB_HEADER_SIZE + EB_CRC_SIZE) return EB_ERR_SHORT;
    crc = eb_crc32c(0, raw, m - EB_CRC_SIZE);
    if (crc != get32(raw + m - EB_CRC_SIZE)) return EB_ERR_CRC;
    eb_header_unpack(raw, h);
    if (h->version != EB_PROTOCOL_VERSION) return EB_ERR_VERSION;
    if (h->len != m - EB_HEADER_SIZE - EB_CRC_SIZE || (h->flags & ~EB_FLAGS_KNOWN)) return EB_ERR_HEADER;
    *payload = raw + EB_HEADER_SIZE;
    return check_payload(h->type, *payload, h->len);
}

void eb_decoder_init(eb_decoder_t *d)
{
    size_t i;
    uint8_t *p = (uint8_t *)d;
    for (i = 0; i < sizeof *d; i++) p[i] = 0;
}

static void reject(eb_decoder_t *d, enum eb_status why, size_t nbytes)
{
    d->stats.reasons[why]++;
    d->stats.resyncs++;
    d->stats.bytes_discarded += (uint32_t)nbytes;
}

int eb_decoder_push(eb_decoder_t *d, uint8_t byte, eb_header_t *h, const uint8_t **payload)
{
    enum eb_status st;
    size_t n;
    if (byte != 0) {
        if (d->discarding) {
            d->stats.bytes_discarded++;
        } else if (d->n >= EB_MAX_ENCODED) { /* too long: drop it now, skip to the next 0x00 */
            reject(d, EB_ERR_OVERSIZE, d->n + 1);
            d->n = 0;
            d->discarding = 1;
        } else {
            d->enc[d->n++] = byte;
        }
        return 0;
    }
    n = d->n;
    d->n = 0;
    if (d->discarding) { d->discarding = 0; return 0; }
    if (n == 0) return 0; /* idle fill */
    st = eb_frame_decode(d->enc, n, d->raw, h, payload);
    if (st != EB_OK) { reject(d, st, n); return 0; }
    d->stats.frames++;
    if (d->have_seq && h->type != EB_HELLO) {
        uint16_t gap = (uint16_t)(h->seq - d->last_seq - 1u);
        if (gap >= 0x8000u) { d->stats.seq_reorders++; return 1; }
        d->stats.seq_gaps += gap;
    }
    d->have_seq = 1;
    d->last_seq = h->seq;
    return 1;
}
