/* essm_bridge.h - MCU-side reference of the essm-stream firmware bridge protocol (v1).
 *
 * Dependency-free C99: COBS, CRC-32C, header pack/unpack and a byte-at-a-time streaming
 * decoder with fixed buffers (no malloc, no stdio). Wire format, see docs/PROTOCOL.md:
 *
 *     COBS( header(11) | payload(len) | crc32c(header|payload) u32 LE ) | 0x00
 *
 * header: version u8, type u8, flags u8, seq u16, timestamp_us u32, len u16 (little-endian).
 * Must agree with firmware_bridge/framing.py; tests/test_bridge_c.py holds both to golden vectors.
 */
#ifndef ESSM_BRIDGE_H
#define ESSM_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#define EB_PROTOCOL_VERSION 1u
#define EB_HEADER_SIZE 11u
#define EB_CRC_SIZE 4u
#ifndef EB_MAX_PAYLOAD
#define EB_MAX_PAYLOAD 2048u /* protocol maximum; a firmware may lower it and say so in HELLO */
#endif
#define EB_MAX_RAW (EB_HEADER_SIZE + EB_MAX_PAYLOAD + EB_CRC_SIZE)
#define EB_MAX_ENCODED (EB_MAX_RAW + EB_MAX_RAW / 254u + 1u) /* stuffed, delimiter excluded */

#define EB_FLAG_ACK_REQUEST 0x01u
#define EB_FLAG_ACK 0x02u
#define EB_FLAGS_KNOWN 0x03u

enum eb_msg_type {
    EB_HELLO = 0x01, EB_HEARTBEAT = 0x02, EB_SENSOR_FRAME = 0x10, EB_OUTPUT = 0x11,
    EB_TELEMETRY = 0x20, EB_SET_BUDGET = 0x30, EB_BUDGET_REPORT = 0x31, EB_ERROR = 0x7F
};

/* Why a segment was rejected (the Python Decoder counts the same reasons). */
enum eb_status {
    EB_OK = 0, EB_ERR_OVERSIZE, EB_ERR_COBS, EB_ERR_SHORT, EB_ERR_CRC, EB_ERR_VERSION,
    EB_ERR_HEADER, EB_ERR_UNKNOWN_TYPE, EB_ERR_PAYLOAD
};

typedef struct {
    uint8_t version, type, flags;
    uint16_t seq;
    uint32_t timestamp_us;
    uint16_t len;
} eb_header_t;

uint32_t eb_crc32c(uint32_t crc, const uint8_t *data, size_t n); /* start with crc = 0 */

/* COBS encode n bytes into out (capacity cap); returns bytes written, 0 if cap too small.
 * Writes no delimiter. */
size_t eb_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
/* COBS decode; returns decoded length or (size_t)-1 on a malformed input or too small cap. */
size_t eb_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

void eb_header_pack(const eb_header_t *h, uint8_t out[EB_HEADER_SIZE]);
void eb_header_unpack(const uint8_t in[EB_HEADER_SIZE], eb_header_t *h);

/* Build one wire frame (stuffed + trailing 0x00) into out; returns its length, 0 on error
 * (payload too long or cap too small). h->len and h->version are set from the arguments. */
size_t eb_frame_encode(eb_header_t *h, const uint8_t *payload, uint16_t len, uint8_t *out, size_t cap);

/* Check one delimiter-free stuffed segment; on EB_OK, *h and *payload (pointing into raw) are set.
 * raw must hold EB_MAX_RAW bytes. Checks type and, for fixed-size types, payload length. */
enum eb_status eb_frame_decode(const uint8_t *seg, size_t n, uint8_t *raw, eb_header_t *h,
                               const uint8_t **payload);

typedef struct {
    uint32_t frames, resyncs, bytes_discarded, seq_gaps, seq_reorders;
    uint32_t reasons[EB_ERR_PAYLOAD + 1]; /* indexed by enum eb_status */
} eb_stats_t;

typedef struct {
    uint8_t enc[EB_MAX_ENCODED]; /* stuffed bytes of the frame being received */
    uint8_t raw[EB_MAX_RAW];     /* unstuffed copy of the last accepted frame */
    size_t n;
    int discarding;              /* an oversized run is being skipped up to the next 0x00 */
    int have_seq;
    uint16_t last_seq;
    eb_stats_t stats;
} eb_decoder_t;

void eb_decoder_init(eb_decoder_t *d);
/* Push one received byte. Returns 1 when it completed a valid frame: *h and *payload are set
 * (payload stays valid until the next completed frame); 0 otherwise. Never fails. */
int eb_decoder_push(eb_decoder_t *d, uint8_t byte, eb_header_t *h, const uint8_t **payload);

#endif
