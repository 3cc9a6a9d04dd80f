/*
 * libFuzzer target for the token parser (and topic rules). `make fuzz` runs it for
 * FUZZ_SECONDS with AddressSanitizer + UBSan; the pytest suite runs a short bounded run.
 *
 * The first input byte picks what is fuzzed:
 *   0: the rest is a token, verified as-is (structure, base64url, JSON, header checks);
 *   1: the rest is "<header JSON>\n<claims JSON>", correctly MACed with the fuzzer's secret,
 *      so claim validation sees arbitrary JSON behind a valid signature;
 *   2: the rest is "<username>\n<client id>\n<topic>", run through the identity and ACL rules.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "acl.h"
#include "token.h"

static const char SECRET[] = "fuzz-secret-fuzz-secret-fuzz-secret-0123";
static pn_token_config g_cfg;
static int g_ready;

static void setup(void)
{
	pn_config_input in = {0};
	char err[256];
	in.secret = SECRET;
	in.issuer = "fuzz-issuer";
	if(pn_config_load(&g_cfg, &in, err, sizeof(err))) abort();
	g_ready = 1;
}

static char *b64url(const unsigned char *in, size_t len)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = malloc(len * 4 / 3 + 4);
	size_t i, o = 0;
	for(i = 0; i + 2 < len; i += 3){
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = tbl[v >> 18 & 63]; out[o++] = tbl[v >> 12 & 63];
		out[o++] = tbl[v >> 6 & 63]; out[o++] = tbl[v & 63];
	}
	if(len - i == 1){
		unsigned v = (unsigned)in[i] << 16;
		out[o++] = tbl[v >> 18 & 63]; out[o++] = tbl[v >> 12 & 63];
	}else if(len - i == 2){
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
		out[o++] = tbl[v >> 18 & 63]; out[o++] = tbl[v >> 12 & 63]; out[o++] = tbl[v >> 6 & 63];
	}
	out[o] = '\0';
	return out;
}

static void fuzz_signed(const char *text, size_t len)
{
	const char *nl = memchr(text, '\n', len);
	char *h, *p, *sig64, *tok;
	unsigned char sig[32];
	unsigned int siglen = 0;
	size_t hl, pl, tl;
	pn_claims c;

	if(!nl) return;
	h = b64url((const unsigned char *)text, (size_t)(nl - text));
	p = b64url((const unsigned char *)nl + 1, len - (size_t)(nl - text) - 1);
	hl = strlen(h);
	pl = strlen(p);
	tok = malloc(hl + pl + 64);
	memcpy(tok, h, hl);
	tok[hl] = '.';
	memcpy(tok + hl + 1, p, pl);
	tl = hl + 1 + pl;
	HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)tok, tl, sig, &siglen);
	sig64 = b64url(sig, siglen);
	tok[tl] = '.';
	strcpy(tok + tl + 1, sig64);
	pn_token_verify(&g_cfg, tok, 1700000000, &c);
	pn_check_connect(&g_cfg, "42", "42-fuzz", tok, 1700000000, &c);
	free(h); free(p); free(sig64); free(tok);
}

static void fuzz_rules(char *text)
{
	char *user = text, *cid, *topic;
	int access;
	cid = strchr(user, '\n');
	if(!cid) return;
	*cid++ = '\0';
	topic = strchr(cid, '\n');
	if(!topic) return;
	*topic++ = '\0';
	pn_valid_user_id(user);
	pn_valid_client_id(user, cid);
	pn_strip_share(topic);
	for(access = 1; access <= 8; access <<= 1){
		int allowed = pn_acl_allows(user, 0, topic, access, 0);
		/* invariant: a user never gets rights outside users/<user>/ (unsubscribe aside) */
		if(allowed && access != PN_ACCESS_UNSUBSCRIBE){
			size_t ul = strlen(user);
			if(strncmp(topic, "users/", 6) != 0 || strncmp(topic + 6, user, ul) != 0 || topic[6 + ul] != '/') abort();
		}
		if(allowed && access == PN_ACCESS_WRITE && pn_acl_allows(user, 0, topic, access, 1)) abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	pn_claims c;
	unsigned char *out;

	if(!g_ready) setup();
	if(size < 1) return 0;
	text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	switch(data[0] % 3){
		case 0:
			pn_token_verify(&g_cfg, text, 1700000000, &c);
			out = malloc(size);
			pn_b64url_decode(text, strlen(text), out);
			free(out);
			break;
		case 1:
			fuzz_signed(text, size - 1);
			break;
		default:
			fuzz_rules(text);
			break;
	}
	free(text);
	return 0;
}
