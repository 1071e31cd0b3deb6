/* bridge_cli.c - tiny test driver for essm_bridge.c, used by tests/test_bridge_c.py.
 *
 *   bridge_cli decode   < stream.bin   one line per accepted frame, then a stats line:
 *                                      F <type> <flags> <seq> <timestamp_us> <payload hex or ->
 *                                      S frames=.. resyncs=.. ...
 *   bridge_cli encode   < frames.txt   lines "<type> <flags> <seq> <timestamp_us> <payload hex or ->"
 *                                      (decimal numbers) -> binary wire frames on stdout
 *   bridge_cli crc32c <hex>            CRC-32C of the bytes, 8 hex digits
 *   bridge_cli cobs <hex>              COBS encoding of the bytes, hex
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "essm_bridge.h"

/* The payload hex field of an encode line: read with a literal width (%8192s), so the conversion can
 * never write past `hex` whatever the line holds; longer payloads than EB_MAX_PAYLOAD are refused. */
#define HEX_FIELD 8192
#define STR_(x) #x
#define STR(x) STR_(x)

static const char *reason_names[] = {"ok", "oversize", "cobs_errors", "short", "crc_errors",
                                     "bad_version", "bad_header", "unknown_type", "bad_payload"};

static size_t parse_hex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned v;
    if (strcmp(s, "-") == 0) return 0;
    while (s[0] && s[1] && n < cap && sscanf(s, "%2x", &v) == 1) { out[n++] = (uint8_t)v; s += 2; }
    return n;
}

static void print_hex(const uint8_t *p, size_t n)
{
    size_t i;
    if (n == 0) fputs("-", stdout);
    for (i = 0; i < n; i++) printf("%02x", p[i]);
}

static int do_decode(void)
{
    static eb_decoder_t d; /* static: ~4 KiB, as a firmware would place it */
    eb_header_t h;
    const uint8_t *payload;
    int c, i;
    eb_decoder_init(&d);
    while ((c = getchar()) != EOF) {
        if (eb_decoder_push(&d, (uint8_t)c, &h, &payload)) {
            printf("F %u %u %u %lu ", h.type, h.flags, h.seq, (unsigned long)h.timestamp_us);
            print_hex(payload, h.len);
            putchar('\n');
        }
    }
    printf("S frames=%lu resyncs=%lu bytes_discarded=%lu seq_gaps=%lu seq_reorders=%lu",
           (unsigned long)d.stats.frames, (unsigned long)d.stats.resyncs,
           (unsigned long)d.stats.bytes_discarded, (unsigned long)d.stats.seq_gaps,
           (unsigned long)d.stats.seq_reorders);
    for (i = 1; i <= EB_ERR_PAYLOAD; i++) printf(" %s=%lu", reason_names[i], (unsigned long)d.stats.reasons[i]);
    putchar('\n');
    return 0;
}

/* Lines are read whole and checked: a line longer than the buffer, a hex field longer than the
 * largest payload, or hex with an odd length or non-hex digits is an error (exit 1), never a silent
 * truncation and never a write past a buffer (the %s conversion is bounded by the field width). */
static int do_encode(void)
{
    /* a line: four numbers, the payload hex and (golden messages.txt) the expected frame hex */
    static char line[2 * EB_MAX_PAYLOAD + 2 * EB_MAX_ENCODED + 160], hex[HEX_FIELD + 1];
    static uint8_t payload[EB_MAX_PAYLOAD], out[EB_MAX_ENCODED + 1];
    unsigned type, flags, seq;
    unsigned long ts, lineno = 0;
    eb_header_t h;
    size_t n, len, hexlen, i;
    while (fgets(line, sizeof line, stdin)) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(stdin)) {
            fprintf(stderr, "line %lu: longer than %u bytes\n", lineno, (unsigned)(sizeof line - 2));
            return 1;
        }
        if (sscanf(line, "%u %u %u %lu %" STR(HEX_FIELD) "s", &type, &flags, &seq, &ts, hex) != 5) continue;
        hexlen = strlen(hex);
        if (strcmp(hex, "-") != 0) {
            if (hexlen > 2 * EB_MAX_PAYLOAD) {
                fprintf(stderr, "line %lu: payload hex too long (over %u bytes)\n", lineno, (unsigned)EB_MAX_PAYLOAD);
                return 1;
            }
            for (i = 0; i < hexlen; i++)
                if (!strchr("0123456789abcdefABCDEF", hex[i])) break;
            if (i < hexlen || hexlen % 2) {
                fprintf(stderr, "line %lu: payload is not an even number of hex digits\n", lineno);
                return 1;
            }
        }
        len = parse_hex(hex, payload, sizeof payload);
        h.type = (uint8_t)type; h.flags = (uint8_t)flags; h.seq = (uint16_t)seq; h.timestamp_us = (uint32_t)ts;
        n = eb_frame_encode(&h, payload, (uint16_t)len, out, sizeof out);
        if (n == 0) { fprintf(stderr, "encode failed for line: %s", line); return 1; }
        fwrite(out, 1, n, stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static uint8_t buf[4 * EB_MAX_RAW], enc[5 * EB_MAX_RAW];
    size_t n;
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) return do_decode();
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) return do_encode();
    if (argc == 3 && strcmp(argv[1], "crc32c") == 0) {
        n = parse_hex(argv[2], buf, sizeof buf);
        printf("%08lx\n", (unsigned long)eb_crc32c(0, buf, n));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "cobs") == 0) {
        n = parse_hex(argv[2], buf, sizeof buf);
        n = eb_cobs_encode(buf, n, enc, sizeof enc);
        print_hex(enc, n);
        putchar('\n');
        return 0;
    }
    fprintf(stderr, "usage: %s decode|encode|crc32c HEX|cobs HEX\n", argv[0]);
    return 2;
}
