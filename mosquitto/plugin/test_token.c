/*
 * C unit tests for token.c, acl.c and sessions.c (run by `make test`, built with ASan+UBSan).
 *
 * Tokens are built here independently of libjwt: base64url + OpenSSL HMAC / RSA / ECDSA, so
 * the tests can also produce what no well-behaved signer would (alg none, duplicate keys,
 * algorithm confusion, bad encodings).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "acl.h"
#include "sessions.h"
#include "token.h"

static int g_checks, g_failures;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
#define CHECK_RESULT(got, want) check_result((got), (want), #got, __FILE__, __LINE__)

static void check(int ok, const char *what, const char *file, int line)
{
	g_checks++;
	if(!ok){
		g_failures++;
		fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
	}
}

static void check_result(pn_result got, pn_result want, const char *what, const char *file, int line)
{
	g_checks++;
	if(got != want){
		g_failures++;
		fprintf(stderr, "%s:%d: FAILED: %s = %s, want %s\n", file, line, what,
				pn_result_str(got), pn_result_str(want));
	}
}

/* ------------------------------------------------------------------ token builder */

static const char SECRET[] = "0123456789abcdef0123456789abcdef-test";
static time_t NOW;

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

typedef enum { SIGN_NONE, SIGN_HMAC, SIGN_PKEY_RS256, SIGN_PKEY_ES256, SIGN_GARBAGE } sign_kind;

/* header.payload.signature; the signature is computed over exactly what is encoded. */
static char *make_token(const char *header, const char *payload, sign_kind kind,
		const void *key, size_t keylen)
{
	char *h = b64url((const unsigned char *)header, strlen(header));
	char *p = b64url((const unsigned char *)payload, strlen(payload));
	size_t silen = strlen(h) + strlen(p) + 2;
	char *signing_input = malloc(silen);
	unsigned char sig[512];
	size_t siglen = 0;
	char *s, *out;

	snprintf(signing_input, silen, "%s.%s", h, p);
	if(kind == SIGN_HMAC){
		unsigned int l = 0;
		HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)signing_input, strlen(signing_input), sig, &l);
		siglen = l;
	}else if(kind == SIGN_PKEY_RS256 || kind == SIGN_PKEY_ES256){
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		unsigned char der[512];
		size_t derlen = sizeof(der);
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, (EVP_PKEY *)key);
		EVP_DigestSign(ctx, der, &derlen, (unsigned char *)signing_input, strlen(signing_input));
		EVP_MD_CTX_free(ctx);
		if(kind == SIGN_PKEY_RS256){
			memcpy(sig, der, derlen);
			siglen = derlen;
		}else{ /* JWS wants raw r||s, not DER */
			const unsigned char *d = der;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &d, (long)derlen);
			const BIGNUM *r, *sv;
			ECDSA_SIG_get0(es, &r, &sv);
			BN_bn2binpad(r, sig, 32);
			BN_bn2binpad(sv, sig + 32, 32);
			siglen = 64;
			ECDSA_SIG_free(es);
		}
	}else if(kind == SIGN_GARBAGE){
		memset(sig, 0x41, 32);
		siglen = 32;
	}
	s = b64url(sig, siglen);
	out = malloc(silen + strlen(s) + 2);
	sprintf(out, "%s.%s", signing_input, s);
	free(h); free(p); free(s); free(signing_input);
	return out;
}

static char *claims_json(const char *fmt, ...)
{
	static char buf[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return buf;
}

static const char *HS_HEADER = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static char *hs(const char *header, const char *payload)
{
	return make_token(header, payload, SIGN_HMAC, SECRET, strlen(SECRET));
}

static char *std_claims(long long exp_delta)
{
	return claims_json("{\"sub\":\"42\",\"iat\":%lld,\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}",
			(long long)NOW, (long long)NOW + exp_delta);
}

static pn_result verify_free(const pn_token_config *cfg, char *tok, pn_claims *out)
{
	pn_claims tmp;
	pn_result r = pn_token_verify(cfg, tok, NOW, out ? out : &tmp);
	free(tok);
	return r;
}

static void load_hs(pn_token_config *cfg, const char *issuer)
{
	pn_config_input in = {0};
	char err[256];
	in.secret = SECRET;
	in.issuer = issuer;
	in.leeway = "5";
	if(pn_config_load(cfg, &in, err, sizeof(err))){
		fprintf(stderr, "config: %s\n", err);
		exit(2);
	}
}

/* ------------------------------------------------------------------ tests: config */

static char *write_temp(const char *content, size_t len)
{
	char *path = strdup("/tmp/pn_test_XXXXXX");
	int fd = mkstemp(path);
	if(write(fd, content, len) != (ssize_t)len) exit(2);
	close(fd);
	return path;
}

static char *pubkey_pem(EVP_PKEY *k, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;
	PEM_write_bio_PUBKEY(b, k);
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n + 1);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

static char *privkey_pem(EVP_PKEY *k, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;
	PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n + 1);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

static int try_load(pn_config_input in)
{
	pn_token_config cfg;
	char err[512] = "";
	int rc = pn_config_load(&cfg, &in, err, sizeof(err));
	if(rc == 0) pn_config_free(&cfg);
	else if(!err[0]) return 99; /* every refusal must say why */
	return rc;
}

static void test_config(EVP_PKEY *rsa, EVP_PKEY *ec, EVP_PKEY *rsa_small)
{
	pn_config_input in;
	size_t len;
	char *pem, *path, *ecpath, *privpath, *smallpath, *secretpath, *shortpath, *emptypath;

	memset(&in, 0, sizeof(in));
	CHECK(try_load(in) == -1); /* HS256 without a secret */
	in.secret = "";
	CHECK(try_load(in) == -1);
	in.secret = "0123456789abcdef0123456789abcde"; /* 31 bytes */
	CHECK(try_load(in) == -1);
	in.secret = "0123456789abcdef0123456789abcdef"; /* 32 bytes */
	CHECK(try_load(in) == 0);
	in.alg = "none";
	CHECK(try_load(in) == -1);
	in.alg = "hs256";
	CHECK(try_load(in) == -1);
	in.alg = "HS512";
	CHECK(try_load(in) == -1);
	in.alg = NULL;
	in.leeway = "61";
	CHECK(try_load(in) == -1);
	in.leeway = "-1";
	CHECK(try_load(in) == -1);
	in.leeway = "5s";
	CHECK(try_load(in) == -1);
	in.leeway = "60";
	CHECK(try_load(in) == 0);
	in.max_token_bytes = "100";
	CHECK(try_load(in) == -1);
	in.max_token_bytes = "70000";
	CHECK(try_load(in) == -1);
	in.max_token_bytes = "8192";
	CHECK(try_load(in) == 0);
	in.audience = "";
	CHECK(try_load(in) == -1);
	in.audience = NULL;
	in.issuer = "";
	CHECK(try_load(in) == -1);
	in.issuer = NULL;

	secretpath = write_temp("0123456789abcdef0123456789abcdef\n", 33);
	shortpath = write_temp("short\n", 6);
	emptypath = write_temp("", 0);
	in.secret_file = secretpath; /* both given */
	CHECK(try_load(in) == -1);
	in.secret = NULL;
	CHECK(try_load(in) == 0);
	{
		pn_token_config cfg;
		char err[256];
		CHECK(pn_config_load(&cfg, &in, err, sizeof(err)) == 0);
		CHECK(cfg.key_len == 32); /* trailing newline dropped */
		pn_config_free(&cfg);
	}
	in.secret_file = shortpath;
	CHECK(try_load(in) == -1);
	in.secret_file = emptypath;
	CHECK(try_load(in) == -1);
	in.secret_file = "/nonexistent/secret";
	CHECK(try_load(in) == -1);
	in.secret_file = NULL;

	pem = pubkey_pem(rsa, &len);
	path = write_temp(pem, len);
	free(pem);
	pem = pubkey_pem(ec, &len);
	ecpath = write_temp(pem, len);
	free(pem);
	pem = privkey_pem(rsa, &len);
	privpath = write_temp(pem, len);
	free(pem);
	pem = pubkey_pem(rsa_small, &len);
	smallpath = write_temp(pem, len);
	free(pem);

	memset(&in, 0, sizeof(in));
	in.alg = "RS256";
	CHECK(try_load(in) == -1); /* no key file */
	in.public_key_file = "/nonexistent.pem";
	CHECK(try_load(in) == -1);
	in.public_key_file = emptypath;
	CHECK(try_load(in) == -1);
	in.public_key_file = ecpath; /* wrong key type */
	CHECK(try_load(in) == -1);
	in.public_key_file = privpath; /* a private key is not a public key */
	CHECK(try_load(in) == -1);
	in.public_key_file = smallpath; /* 1024 bits */
	CHECK(try_load(in) == -1);
	in.public_key_file = path;
	CHECK(try_load(in) == 0);
	in.secret = "0123456789abcdef0123456789abcdef"; /* secret with an asymmetric alg */
	CHECK(try_load(in) == -1);
	in.secret = NULL;
	in.alg = "ES256";
	CHECK(try_load(in) == -1); /* RSA key for ES256 */
	in.public_key_file = ecpath;
	CHECK(try_load(in) == 0);
	in.alg = NULL; /* HS256 with a key file is a mistake */
	CHECK(try_load(in) == -1);

	unlink(path); unlink(ecpath); unlink(privpath); unlink(smallpath);
	unlink(secretpath); unlink(shortpath); unlink(emptypath);
	free(path); free(ecpath); free(privpath); free(smallpath);
	free(secretpath); free(shortpath); free(emptypath);
}

/* ------------------------------------------------------------------ tests: HS256 tokens */

static void test_hs256(void)
{
	pn_token_config cfg, iss_cfg, empty_cfg;
	pn_claims c;
	char big[6000];
	char sub65[70];

	load_hs(&cfg, NULL);
	load_hs(&iss_cfg, "https://issuer.example");

	memset(&c, 0, sizeof(c));
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, std_claims(60)), &c), PN_OK);
	CHECK(!strcmp(c.sub, "42"));
	CHECK(c.exp == (long long)NOW + 60);
	CHECK(c.is_service == 0);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\"}", std_claims(60)), NULL), PN_OK);

	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"worker\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"role\":\"service\"}",
		(long long)NOW + 60)), &c), PN_OK);
	CHECK(c.is_service == 1);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"role\":\"user\"}",
		(long long)NOW + 60)), &c), PN_OK);
	CHECK(c.is_service == 0);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"role\":\"admin\"}",
		(long long)NOW + 60)), NULL), PN_ERR_ROLE);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"role\":[\"service\"]}",
		(long long)NOW + 60)), NULL), PN_ERR_ROLE);

	/* exp: required, integer, with leeway 5 */
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, std_claims(-3)), NULL), PN_OK);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, std_claims(-5)), NULL), PN_ERR_EXPIRED);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, std_claims(-3600)), NULL), PN_ERR_EXPIRED);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER,
		"{\"sub\":\"42\",\"aud\":\"plantnotify-mqtt\"}"), NULL), PN_ERR_EXP_MISSING);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":\"%lld\",\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL),
		PN_ERR_EXP_MISSING);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld.5,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL),
		PN_ERR_EXP_MISSING);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER,
		"{\"sub\":\"42\",\"exp\":-1,\"aud\":\"plantnotify-mqtt\"}"), NULL), PN_ERR_EXPIRED);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER,
		"{\"sub\":\"42\",\"exp\":9223372036854775807,\"aud\":\"plantnotify-mqtt\"}"), NULL), PN_OK);

	/* nbf / iat */
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"nbf\":%lld,\"aud\":\"plantnotify-mqtt\"}",
		(long long)NOW + 600, (long long)NOW + 60)), NULL), PN_ERR_NBF);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"nbf\":%lld,\"aud\":\"plantnotify-mqtt\"}",
		(long long)NOW + 600, (long long)NOW + 3)), NULL), PN_OK);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"nbf\":\"soon\",\"aud\":\"plantnotify-mqtt\"}",
		(long long)NOW + 600)), NULL), PN_ERR_NBF);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"iat\":%lld,\"aud\":\"plantnotify-mqtt\"}",
		(long long)NOW + 600, (long long)NOW + 60)), NULL), PN_ERR_IAT);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"iat\":null,\"aud\":\"plantnotify-mqtt\"}",
		(long long)NOW + 600)), NULL), PN_ERR_IAT);

	/* aud / iss */
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld}", (long long)NOW + 60)), NULL), PN_ERR_AUD);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"other-api\"}", (long long)NOW + 60)), NULL), PN_ERR_AUD);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":[\"x\",\"plantnotify-mqtt\"]}", (long long)NOW + 60)), NULL), PN_OK);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":[\"x\",\"y\"]}", (long long)NOW + 60)), NULL), PN_ERR_AUD);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":[1,\"plantnotify-mqtt\"]}", (long long)NOW + 60)), NULL), PN_ERR_AUD);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"PLANTNOTIFY-MQTT\"}", (long long)NOW + 60)), NULL), PN_ERR_AUD);
	CHECK_RESULT(verify_free(&iss_cfg, hs(HS_HEADER, std_claims(60)), NULL), PN_ERR_ISS);
	CHECK_RESULT(verify_free(&iss_cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"iss\":\"https://evil.example\"}",
		(long long)NOW + 60)), NULL), PN_ERR_ISS);
	CHECK_RESULT(verify_free(&iss_cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"iss\":\"https://issuer.example\"}",
		(long long)NOW + 60)), NULL), PN_OK);

	/* sub: topic injection and charset */
	{
		const char *bad_subs[] = {"\"\"", "\"a/b\"", "\"+\"", "\"#\"", "\"$SYS\"", "\"a b\"", "\"é\"",
			"\"42\\n\"", "42", "null", "[\"42\"]", NULL};
		int i;
		for(i = 0; bad_subs[i]; i++){
			CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
				"{\"sub\":%s,\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", bad_subs[i], (long long)NOW + 60)),
				NULL), PN_ERR_SUB);
		}
		memset(sub65, 'a', 65);
		sub65[65] = '\0';
		CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
			"{\"sub\":\"%s\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", sub65, (long long)NOW + 60)),
			NULL), PN_ERR_SUB);
		sub65[64] = '\0';
		CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
			"{\"sub\":\"%s\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", sub65, (long long)NOW + 60)),
			NULL), PN_OK);
		/* NUL inside a JSON string: jansson refuses it outright */
		CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
			"{\"sub\":\"42\\u0000x\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)),
			NULL), PN_ERR_MALFORMED);
		CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
			"{\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL), PN_ERR_SUB);
	}

	/* duplicate keys: libjwt would take the last sub */
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
		"{\"sub\":\"42\",\"sub\":\"43\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)),
		NULL), PN_ERR_DUPLICATE);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"none\",\"alg\":\"HS256\"}", std_claims(60)), NULL),
		PN_ERR_DUPLICATE);

	/* alg: none in every casing, other algorithms, missing */
	{
		const char *algs[] = {"none", "None", "NONE", "nOnE", "hs256", "HS384", "HS512", "RS256", "ES256", "", NULL};
		int i;
		char header[64];
		for(i = 0; algs[i]; i++){
			snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", algs[i]);
			CHECK_RESULT(verify_free(&cfg, hs(header, std_claims(60)), NULL), PN_ERR_ALG);
			CHECK_RESULT(verify_free(&cfg, make_token(header, std_claims(60), SIGN_NONE, NULL, 0), NULL),
				PN_ERR_MALFORMED); /* empty signature segment */
		}
		CHECK_RESULT(verify_free(&cfg, hs("{\"typ\":\"JWT\"}", std_claims(60)), NULL), PN_ERR_ALG);
		CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":null}", std_claims(60)), NULL), PN_ERR_ALG);
	}

	/* header parameters */
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", std_claims(60)), NULL), PN_ERR_HEADER);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", std_claims(60)), NULL), PN_ERR_HEADER);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"jku\":\"http://169.254.169.254/\"}", std_claims(60)), NULL), PN_ERR_HEADER);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"jwk\":{\"kty\":\"oct\"}}", std_claims(60)), NULL), PN_ERR_HEADER);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"x5u\":\"http://x\"}", std_claims(60)), NULL), PN_ERR_HEADER);
	/* kid is never used to find a key: a correctly signed token with a hostile kid is fine... */
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"kid\":\"../../../../dev/null\"}", std_claims(60)), NULL), PN_OK);
	/* ...and one MACed with the empty key the kid points at is not */
	CHECK_RESULT(verify_free(&cfg, make_token("{\"alg\":\"HS256\",\"kid\":\"../../../../dev/null\"}",
		std_claims(60), SIGN_HMAC, "", 0), NULL), PN_ERR_SIGNATURE);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\",\"kid\":7}", std_claims(60)), NULL), PN_ERR_HEADER);

	/* signatures */
	CHECK_RESULT(verify_free(&cfg, make_token(HS_HEADER, std_claims(60), SIGN_HMAC,
		"another-secret-another-secret-0123", 34), NULL), PN_ERR_SIGNATURE);
	CHECK_RESULT(verify_free(&cfg, make_token(HS_HEADER, std_claims(60), SIGN_GARBAGE, NULL, 0), NULL),
		PN_ERR_SIGNATURE);
	{
		char *t = hs(HS_HEADER, std_claims(60));
		size_t n = strlen(t);
		t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
		CHECK_RESULT(verify_free(&cfg, t, NULL), PN_ERR_SIGNATURE);
	}
	{
		/* claims swapped after signing */
		char *good = hs(HS_HEADER, std_claims(60));
		char *other = hs(HS_HEADER, claims_json(
			"{\"sub\":\"43\",\"iat\":%lld,\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}",
			(long long)NOW, (long long)NOW + 60));
		char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
		char *o1 = strchr(other, '.'), *o2 = strrchr(other, '.');
		char spliced[2048];
		snprintf(spliced, sizeof(spliced), "%.*s.%.*s%s", (int)(d1 - good), good,
				(int)(o2 - o1 - 1), o1 + 1, d2);
		CHECK_RESULT(pn_token_verify(&cfg, spliced, NOW, &c), PN_ERR_SIGNATURE);
		free(good);
		free(other);
	}

	/* structure and size */
	CHECK_RESULT(pn_token_verify(&cfg, NULL, NOW, &c), PN_ERR_EMPTY);
	CHECK_RESULT(pn_token_verify(&cfg, "", NOW, &c), PN_ERR_EMPTY);
	CHECK_RESULT(pn_token_verify(&cfg, "abc", NOW, &c), PN_ERR_MALFORMED);
	CHECK_RESULT(pn_token_verify(&cfg, "abc.def", NOW, &c), PN_ERR_MALFORMED);
	CHECK_RESULT(pn_token_verify(&cfg, "a.b.c.d", NOW, &c), PN_ERR_MALFORMED);
	CHECK_RESULT(pn_token_verify(&cfg, "..", NOW, &c), PN_ERR_MALFORMED);
	CHECK_RESULT(pn_token_verify(&cfg, "e30.e30.!!!!", NOW, &c), PN_ERR_MALFORMED);
	CHECK_RESULT(pn_token_verify(&cfg, "e30=.e30.AAAA", NOW, &c), PN_ERR_MALFORMED);
	CHECK_RESULT(pn_token_verify(&cfg, "e30.e30.A", NOW, &c), PN_ERR_MALFORMED); /* len % 4 == 1 */
	CHECK_RESULT(pn_token_verify(&cfg, "e31.e30.AAAA", NOW, &c), PN_ERR_MALFORMED); /* non-canonical */
	CHECK_RESULT(pn_token_verify(&cfg, "W10.e30.AAAA", NOW, &c), PN_ERR_MALFORMED); /* header [] */
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, "\"just a string\""), NULL), PN_ERR_MALFORMED);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, "{\"sub\":\"42\""), NULL), PN_ERR_MALFORMED);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\"} ", std_claims(60)), NULL), PN_OK);
	CHECK_RESULT(verify_free(&cfg, hs("{\"alg\":\"HS256\"} x", std_claims(60)), NULL), PN_ERR_MALFORMED);
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK_RESULT(pn_token_verify(&cfg, big, NOW, &c), PN_ERR_TOO_LARGE);
	big[4096] = '\0';
	CHECK_RESULT(pn_token_verify(&cfg, big, NOW, &c), PN_ERR_MALFORMED); /* at the limit: parsed */
	{
		/* a correctly signed token padded past the limit is refused before parsing */
		char pad[5000];
		memset(pad, 'x', 4000);
		pad[4000] = '\0';
		CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
			"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"pad\":\"%s\"}",
			(long long)NOW + 60, pad)), NULL), PN_ERR_TOO_LARGE);
		pad[2000] = '\0';
		CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json(
			"{\"sub\":\"42\",\"exp\":%lld,\"aud\":\"plantnotify-mqtt\",\"pad\":\"%s\"}",
			(long long)NOW + 60, pad)), NULL), PN_OK);
	}

	/* a zeroed configuration never means "no signature check" */
	memset(&empty_cfg, 0, sizeof(empty_cfg));
	empty_cfg.alg = PN_ALG_HS256;
	empty_cfg.audience = (char *)"plantnotify-mqtt";
	empty_cfg.max_token_bytes = 4096;
	{
		char *t = make_token(HS_HEADER, std_claims(60), SIGN_HMAC, "", 0);
		CHECK_RESULT(pn_token_verify(&empty_cfg, t, NOW, &c), PN_ERR_SIGNATURE);
		free(t);
	}

	pn_config_free(&cfg);
	pn_config_free(&iss_cfg);
}

/* ------------------------------------------------------------------ tests: RS256 / ES256 */

static void load_pk(pn_token_config *cfg, const char *alg, EVP_PKEY *k, char **path_out)
{
	pn_config_input in = {0};
	char err[256];
	size_t len;
	char *pem = pubkey_pem(k, &len);
	*path_out = write_temp(pem, len);
	free(pem);
	in.alg = alg;
	in.public_key_file = *path_out;
	if(pn_config_load(cfg, &in, err, sizeof(err))){
		fprintf(stderr, "config %s: %s\n", alg, err);
		exit(2);
	}
}

static void test_sid_and_iat(void)
{
	pn_token_config cfg;
	pn_claims out;
	load_hs(&cfg, NULL);
	memset(&out, 0, sizeof(out));
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json("{\"sub\":\"42\",\"sid\":\"0123abcdef\","
			"\"iat\":%lld,\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW, (long long)NOW + 60)), &out), PN_OK);
	CHECK(!strcmp(out.sid, "0123abcdef") && out.iat == (long long)NOW);
	memset(&out, 0, sizeof(out));
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json("{\"sub\":\"42\",\"exp\":%lld,"
			"\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), &out), PN_OK);
	CHECK(out.sid[0] == '\0' && out.iat == -1);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json("{\"sub\":\"42\",\"sid\":\"0123456789abcdef0123456789abcdef0\","
			"\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL), PN_ERR_ROLE);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json("{\"sub\":\"42\",\"sid\":\"a/b\","
			"\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL), PN_ERR_ROLE);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json("{\"sub\":\"42\",\"sid\":7,"
			"\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL), PN_ERR_ROLE);
	CHECK_RESULT(verify_free(&cfg, hs(HS_HEADER, claims_json("{\"sub\":\"42\",\"sid\":\"\","
			"\"exp\":%lld,\"aud\":\"plantnotify-mqtt\"}", (long long)NOW + 60)), NULL), PN_ERR_ROLE);
	pn_config_free(&cfg);
}

static void test_asymmetric(EVP_PKEY *rsa, EVP_PKEY *rsa2, EVP_PKEY *ec, EVP_PKEY *ec2)
{
	pn_token_config rs, es;
	char *rspath, *espath;
	pn_claims c;
	size_t pemlen;
	char *pem;

	load_pk(&rs, "RS256", rsa, &rspath);
	load_pk(&es, "ES256", ec, &espath);

	CHECK_RESULT(verify_free(&rs, make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", std_claims(60),
		SIGN_PKEY_RS256, rsa, 0), &c), PN_OK);
	CHECK(!strcmp(c.sub, "42"));
	CHECK_RESULT(verify_free(&rs, make_token("{\"alg\":\"RS256\"}", std_claims(60),
		SIGN_PKEY_RS256, rsa2, 0), NULL), PN_ERR_SIGNATURE);
	/* algorithm confusion: HS256 MACed with the very public key PEM the broker holds */
	pem = pubkey_pem(rsa, &pemlen);
	CHECK_RESULT(verify_free(&rs, make_token(HS_HEADER, std_claims(60), SIGN_HMAC, pem, pemlen), NULL),
		PN_ERR_ALG);
	CHECK_RESULT(verify_free(&rs, make_token("{\"alg\":\"RS256\"}", std_claims(60), SIGN_HMAC, pem, pemlen), NULL),
		PN_ERR_SIGNATURE);
	free(pem);
	CHECK_RESULT(verify_free(&rs, make_token("{\"alg\":\"ES256\"}", std_claims(60),
		SIGN_PKEY_ES256, ec, 0), NULL), PN_ERR_ALG);
	CHECK_RESULT(verify_free(&rs, make_token("{\"alg\":\"RS256\"}", std_claims(-60),
		SIGN_PKEY_RS256, rsa, 0), NULL), PN_ERR_EXPIRED);

	CHECK_RESULT(verify_free(&es, make_token("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", std_claims(60),
		SIGN_PKEY_ES256, ec, 0), &c), PN_OK);
	CHECK_RESULT(verify_free(&es, make_token("{\"alg\":\"ES256\"}", std_claims(60),
		SIGN_PKEY_ES256, ec2, 0), NULL), PN_ERR_SIGNATURE);
	pem = pubkey_pem(ec, &pemlen);
	CHECK_RESULT(verify_free(&es, make_token(HS_HEADER, std_claims(60), SIGN_HMAC, pem, pemlen), NULL),
		PN_ERR_ALG);
	free(pem);
	CHECK_RESULT(verify_free(&es, make_token("{\"alg\":\"RS256\"}", std_claims(60),
		SIGN_PKEY_RS256, rsa, 0), NULL), PN_ERR_ALG);
	{
		char *t = make_token("{\"alg\":\"ES256\"}", std_claims(60), SIGN_PKEY_ES256, ec, 0);
		size_t n = strlen(t);
		t[n - 3] = t[n - 3] == 'A' ? 'B' : 'A';
		CHECK_RESULT(verify_free(&es, t, NULL), PN_ERR_SIGNATURE);
	}

	pn_config_free(&rs);
	pn_config_free(&es);
	unlink(rspath);
	unlink(espath);
	free(rspath);
	free(espath);
}

/* ------------------------------------------------------------------ tests: identity */

static void test_identity(void)
{
	pn_token_config cfg;
	pn_claims c;
	char *t;
	char id64[80], id65[160];

	CHECK(pn_valid_user_id("42"));
	CHECK(pn_valid_user_id("u_A-9"));
	CHECK(!pn_valid_user_id(""));
	CHECK(!pn_valid_user_id(NULL));
	CHECK(!pn_valid_user_id("a/b"));
	CHECK(!pn_valid_user_id("+"));
	CHECK(!pn_valid_user_id("#"));
	CHECK(!pn_valid_user_id("$SYS"));
	CHECK(!pn_valid_user_id("a b"));
	memset(id64, 'x', 64); id64[64] = '\0';
	memset(id65, 'x', 65); id65[65] = '\0';
	CHECK(pn_valid_user_id(id64));
	CHECK(!pn_valid_user_id(id65));

	CHECK(pn_valid_client_id("42", "42"));
	CHECK(pn_valid_client_id("42", "42-pixel7"));
	CHECK(pn_valid_client_id("42", "42-a.b:c_d-e"));
	CHECK(!pn_valid_client_id("42", "42-"));
	CHECK(!pn_valid_client_id("42", "42x"));
	CHECK(!pn_valid_client_id("42", "4"));
	CHECK(!pn_valid_client_id("42", "43-a"));
	CHECK(!pn_valid_client_id("42", "42-a/b"));
	CHECK(!pn_valid_client_id("42", "42-a+b"));
	CHECK(!pn_valid_client_id("42", "42-a#"));
	CHECK(!pn_valid_client_id("42", "42-a b"));
	CHECK(!pn_valid_client_id("42", ""));
	CHECK(!pn_valid_client_id("42", NULL));
	CHECK(!pn_valid_client_id("a/b", "a/b"));
	snprintf(id65, sizeof(id65), "42-%s", id64);
	CHECK(pn_valid_client_id("42", id65));
	strcat(id65, "x");
	CHECK(!pn_valid_client_id("42", id65));

	load_hs(&cfg, NULL);
	t = hs(HS_HEADER, std_claims(60));
	CHECK_RESULT(pn_check_connect(&cfg, "42", "42-phone", t, NOW, &c), PN_OK);
	CHECK_RESULT(pn_check_connect(&cfg, "43", "43-phone", t, NOW, &c), PN_ERR_USERNAME);
	CHECK_RESULT(pn_check_connect(&cfg, "42", "43-phone", t, NOW, &c), PN_ERR_CLIENT_ID);
	CHECK_RESULT(pn_check_connect(&cfg, NULL, "42", t, NOW, &c), PN_ERR_USERNAME);
	CHECK_RESULT(pn_check_connect(&cfg, "+", "+", t, NOW, &c), PN_ERR_USERNAME);
	CHECK_RESULT(pn_check_connect(&cfg, "42", NULL, t, NOW, &c), PN_ERR_CLIENT_ID);
	CHECK_RESULT(pn_check_connect(&cfg, "42", "42", NULL, NOW, &c), PN_ERR_EMPTY);
	CHECK_RESULT(pn_check_connect(&cfg, "42", "42", "", NOW, &c), PN_ERR_EMPTY);
	free(t);
	pn_config_free(&cfg);
}

/* ------------------------------------------------------------------ tests: ACL */

static void test_acl(void)
{
	struct { const char *topic; int access; int retain; int allowed; } cases[] = {
		{"users/42/#", PN_ACCESS_SUBSCRIBE, 0, 1},
		{"users/42/analyses/+", PN_ACCESS_SUBSCRIBE, 0, 1},
		{"users/42/analyses/a1", PN_ACCESS_SUBSCRIBE, 0, 1},
		{"users/42/+", PN_ACCESS_SUBSCRIBE, 0, 1},
		{"users/42", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/42/", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/420/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/4/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/43/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/+/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"+/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"+/42/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"$SYS/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"$share/g/users/42/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"$share/g/users/43/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"plantnotify/#", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"plantnotify/sessions/42", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"", PN_ACCESS_SUBSCRIBE, 0, 0},
		{"users/42/analyses/a1", PN_ACCESS_READ, 0, 1},
		{"users/42/receipts", PN_ACCESS_READ, 0, 1},
		{"users/42", PN_ACCESS_READ, 0, 0},
		{"users/43/analyses/a1", PN_ACCESS_READ, 0, 0},
		{"users/420/analyses/a1", PN_ACCESS_READ, 0, 0},
		{"plantnotify/sessions/42", PN_ACCESS_READ, 0, 0},
		{"plantnotify/broker/boot", PN_ACCESS_READ, 0, 0},
		{"$SYS/broker/uptime", PN_ACCESS_READ, 0, 0},
		{"users/42/receipts", PN_ACCESS_WRITE, 0, 1},
		{"users/42/receipts", PN_ACCESS_WRITE, 1, 0},
		{"users/42/analyses/a1", PN_ACCESS_WRITE, 0, 0},
		{"users/42/receipts/x", PN_ACCESS_WRITE, 0, 0},
		{"users/43/receipts", PN_ACCESS_WRITE, 0, 0},
		{"plantnotify/sessions/42", PN_ACCESS_WRITE, 0, 0},
		{"plantnotify/broker/boot", PN_ACCESS_WRITE, 1, 0},
		{"users/43/#", PN_ACCESS_UNSUBSCRIBE, 0, 1},
		{"users/42/#", 0x10, 0, 0},
	};
	size_t i;
	for(i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		int got = pn_acl_allows("42", 0, cases[i].topic, cases[i].access, cases[i].retain);
		if(got != cases[i].allowed){
			fprintf(stderr, "acl: user 42 %s access %d retain %d: got %d\n", cases[i].topic,
					cases[i].access, cases[i].retain, got);
		}
		CHECK(got == cases[i].allowed);
		/* the service role may do everything (non-empty topics) */
		CHECK(pn_acl_allows("worker", 1, cases[i].topic, cases[i].access, cases[i].retain) == (cases[i].topic[0] != '\0'));
	}
	CHECK(!pn_acl_allows("a/b", 0, "users/a/b/x", PN_ACCESS_READ, 0));
	CHECK(!pn_acl_allows(NULL, 0, "users/42/x", PN_ACCESS_READ, 0));
	CHECK(!pn_acl_allows("42", 0, NULL, PN_ACCESS_READ, 0));

	CHECK(!strcmp(pn_strip_share("$share/g/users/42/#"), "users/42/#"));
	CHECK(!strcmp(pn_strip_share("users/42/#"), "users/42/#"));
	CHECK(pn_strip_share("$share//users/42/#") == NULL);
	CHECK(pn_strip_share("$share/g") == NULL);
	CHECK(pn_strip_share("$share/g/") == NULL);
	CHECK(pn_strip_share(NULL) == NULL);
}

/* ------------------------------------------------------------------ tests: sessions */

typedef struct { int n; char user[8][70]; char json[8][1024]; } emitted;

static void collect(const char *user, const char *json, void *ctx)
{
	emitted *e = ctx;
	if(e->n < 8){
		snprintf(e->user[e->n], sizeof(e->user[0]), "%s", user);
		snprintf(e->json[e->n], sizeof(e->json[0]), "%s", json);
	}
	e->n++;
}

/* The parts of a whole picture, parsed. */
typedef struct { int n; json_t *part[64]; } parts;

static void collect_part(const char *json, size_t len, void *ctx)
{
	parts *p = ctx;
	CHECK(strlen(json) == len);
	if(p->n < 64) p->part[p->n] = json_loads(json, 0, NULL);
	p->n++;
}

static void parts_free(parts *p)
{
	int i;
	for(i = 0; i < p->n && i < 64; i++) json_decref(p->part[i]);
	memset(p, 0, sizeof(*p));
}

/* A stand-in for the broker's client: the table asks it for its client id. */
typedef struct { char id[48]; } fake_client;

static const char *fake_id(const void *client)
{
	return ((const fake_client *)client)->id;
}

static fake_client *fc(fake_client *c, const char *id)
{
	snprintf(c->id, sizeof(c->id), "%s", id);
	return c;
}

static size_t flush_all(pn_sessions *s, unsigned long long *seq, long long now, emitted *e)
{
	memset(e, 0, sizeof(*e));
	return pn_sessions_flush(s, "boot1", seq, now, 1000000, collect, e);
}

/* The whole picture on request: parts, bounds, and "told online" for later departures. */
static void test_pictures(pn_sessions *s, unsigned long long *seq)
{
	static fake_client cl[3000];
	fake_client svc, x;
	parts p = {0};
	emitted e;
	size_t users = 0, total_conns = 0;
	int i, j;

	/* nobody online (a service connection is not announced): one empty part */
	CHECK(pn_sessions_add(s, fc(&svc, "worker-2"), "worker", 9999, 1) == 0);
	CHECK(pn_sessions_online_users(s) == 0);
	CHECK(pn_sessions_snapshot_all(s, "boot1", "req1", 77, 1500, 32, 500, collect_part, &p) == 1);
	CHECK(p.n == 1 && p.part[0]);
	CHECK(!strcmp(json_string_value(json_object_get(p.part[0], "bootId")), "boot1"));
	CHECK(!strcmp(json_string_value(json_object_get(p.part[0], "requestId")), "req1"));
	CHECK(json_integer_value(json_object_get(p.part[0], "seq")) == 77);
	CHECK(json_integer_value(json_object_get(p.part[0], "at")) == 1500);
	CHECK(json_integer_value(json_object_get(p.part[0], "part")) == 1);
	CHECK(json_integer_value(json_object_get(p.part[0], "parts")) == 1);
	CHECK(json_array_size(json_object_get(p.part[0], "sessions")) == 0);
	CHECK(json_object_size(p.part[0]) == 7);
	parts_free(&p);

	/* 2,500 users, one with two devices: parts of at least 500 users, at most 4 parts */
	for(i = 0; i < 2500; i++){
		char user[16];
		snprintf(user, sizeof(user), "p%d", i);
		CHECK(pn_sessions_add(s, fc(&cl[i], user), user, 9999, 0) == 0);
	}
	CHECK(pn_sessions_add(s, fc(&x, "p7-tab"), "p7", 9999, 0) == 0);
	CHECK(pn_sessions_online_users(s) == 2500);
	CHECK(pn_sessions_snapshot_all(s, "boot1", "req2", 78, 1501, 4, 500, collect_part, &p) == 4);
	CHECK(p.n == 4);
	for(i = 0; i < p.n; i++){
		json_t *sessions = json_object_get(p.part[i], "sessions");
		CHECK(json_integer_value(json_object_get(p.part[i], "part")) == i + 1);
		CHECK(json_integer_value(json_object_get(p.part[i], "parts")) == 4);
		CHECK(json_array_size(sessions) <= 625);
		for(j = 0; j < (int)json_array_size(sessions); j++){
			json_t *one = json_array_get(sessions, (size_t)j);
			const char *user = json_string_value(json_object_get(one, "userId"));
			size_t n = (size_t)json_integer_value(json_object_get(one, "connections"));
			CHECK(user && json_array_size(json_object_get(one, "clientIds")) == n);
			CHECK(json_object_size(one) == 3);
			if(user && !strcmp(user, "p7")){
				CHECK(n == 2 && !strcmp(json_string_value(json_array_get(json_object_get(one, "clientIds"), 1)), "p7-tab"));
			}
			users++;
			total_conns += n;
		}
	}
	CHECK(users == 2500 && total_conns == 2501);
	parts_free(&p);
	/* a small picture is one part (at least min users per part) */
	CHECK(pn_sessions_snapshot_all(s, "boot1", "req3", 79, 1502, 32, 5000, collect_part, &p) == 1);
	CHECK(json_array_size(json_object_get(p.part[0], "sessions")) == 2500);
	parts_free(&p);

	/* named in a picture, gone before its own snapshot: the offline snapshot is still due */
	for(i = 0; i < 2500; i++) CHECK(pn_sessions_remove(s, &cl[i]) == 1);
	CHECK(pn_sessions_remove(s, &x) == 1);
	CHECK(flush_all(s, seq, 1503, &e) == 2500);
	CHECK(strstr(e.json[0], "\"connections\":0") != NULL);
	CHECK(pn_sessions_remove(s, &svc) == 1);
}

static void test_sessions(void)
{
	pn_sessions *s = pn_sessions_new(fake_id);
	fake_client a, b, c2, d, svc, gone;
	unsigned long long seq = 0;
	emitted e;
	pn_conn *exp[4];
	json_t *doc;
	char small[16];
	int i;
	static fake_client many[20000];

	CHECK(s != NULL);
	CHECK(pn_sessions_new(NULL) == NULL);
	CHECK(pn_sessions_add(s, fc(&a, "u1-a"), "u1", 100, 0) == 0);
	CHECK(pn_sessions_add(s, fc(&b, "u1-b"), "u1", 200, 0) == 0);
	CHECK(pn_sessions_count_other(s, "u1", "u1-c") == 2);
	CHECK(pn_sessions_count_other(s, "u1", "u1-a") == 1); /* a take-over replaces u1-a */
	CHECK(pn_sessions_count_other(s, "u2", "u2") == 0);
	CHECK(pn_sessions_find(s, &a) && !strcmp(pn_conn_client_id(s, pn_sessions_find(s, &a)), "u1-a"));
	/* one user id, shared by the user's records */
	CHECK(pn_conn_user(pn_sessions_find(s, &a)) == pn_conn_user(pn_sessions_find(s, &b)));
	CHECK(pn_sessions_users(s) == 1);
	CHECK(pn_sessions_find(s, fc(&d, "nobody")) == NULL);

	CHECK(pn_sessions_pending(s) == 1);
	CHECK(flush_all(s, &seq, 1000, &e) == 1);
	CHECK(e.n == 1 && !strcmp(e.user[0], "u1"));
	CHECK(strstr(e.json[0], "\"connections\":2") != NULL);
	CHECK(strstr(e.json[0], "\"clientIds\":[\"u1-a\",\"u1-b\"]") != NULL);
	CHECK(strstr(e.json[0], "\"seq\":1") != NULL);
	CHECK(strstr(e.json[0], "\"bootId\":\"boot1\"") != NULL);
	CHECK(strstr(e.json[0], "\"at\":1000") != NULL);
	doc = json_loads(e.json[0], 0, NULL);
	CHECK(doc && json_is_object(doc) && json_object_size(doc) == 6);
	json_decref(doc);
	/* snprintf contract: the length it needs, and a cut but terminated text */
	CHECK(pn_sessions_snapshot(s, "u1", "boot1", 1, 1000, small, sizeof(small)) == strlen(e.json[0]));
	CHECK(strlen(small) == sizeof(small) - 1);

	/* nothing changed: nothing to publish */
	CHECK(flush_all(s, &seq, 1001, &e) == 0);

	/* take-over: new context authenticates before the old one disconnects */
	CHECK(pn_sessions_add(s, fc(&c2, "u1-a"), "u1", 300, 0) == 0);
	CHECK(pn_sessions_depart(s, &a) == 1);
	CHECK(pn_sessions_depart(s, &a) == 0);
	/* departed: not counted, still answers "who is this" until reaped (Will ACL check) */
	CHECK(pn_sessions_find(s, &a) != NULL && pn_sessions_find(s, &a)->departed);
	CHECK(!strcmp(pn_conn_user(pn_sessions_find(s, &a)), "u1"));
	CHECK(pn_sessions_count_other(s, "u1", NULL) == 2);
	CHECK(pn_sessions_size(s) == 2);
	CHECK(pn_sessions_expired(s, 10000, 0, exp, 4) == 2); /* departed records never expire */
	pn_sessions_reap(s);
	CHECK(pn_sessions_find(s, &a) == NULL);
	CHECK(flush_all(s, &seq, 1002, &e) == 1);
	CHECK(strstr(e.json[0], "\"connections\":2") != NULL);
	CHECK(strstr(e.json[0], "\"seq\":2") != NULL);

	/* during a take-over the same client id counts once */
	CHECK(pn_sessions_add(s, fc(&d, "u1-a"), "u1", 300, 0) == 0);
	flush_all(s, &seq, 1003, &e);
	CHECK(strstr(e.json[0], "\"connections\":2,\"clientIds\":[\"u1-a\",\"u1-b\"]") != NULL);
	CHECK(pn_sessions_depart(s, &c2) == 1);
	/* a reused pointer re-authenticating replaces its departed record */
	CHECK(pn_sessions_add(s, fc(&c2, "u3"), "u3", 300, 0) == 0);
	CHECK(!pn_sessions_find(s, &c2)->departed && !strcmp(pn_conn_user(pn_sessions_find(s, &c2)), "u3"));
	CHECK(pn_sessions_remove(s, &c2) == 1);
	pn_sessions_reap(s);

	/* overlapping ids: "u1-a" is also a valid client id for a user named "u1-a" */
	CHECK(pn_sessions_client_id_owned_by_other(s, "u1-a", "u1-a") == 1);
	CHECK(pn_sessions_client_id_owned_by_other(s, "u1", "u1-a") == 0);
	CHECK(pn_sessions_client_id_owned_by_other(s, "u1-a", "u1-a-x") == 0);
	CHECK(pn_sessions_add(s, fc(&svc, "u1-a-x"), "u1-a", 300, 0) == 0);
	CHECK(pn_sessions_client_id_owned_by_other(s, "u1", "u1-a-x") == 1);
	CHECK(pn_sessions_client_id_owned_by_other(s, "u1-a", "u1-a-x") == 0);
	CHECK(pn_sessions_client_id_owned_by_other(s, "u1-a-x", "u1-a-x") == 1);
	CHECK(pn_sessions_remove(s, &svc) == 1);

	/* expiry: only what has expired is looked at */
	CHECK(pn_sessions_expired(s, 150, 0, exp, 4) == 0);
	CHECK(pn_sessions_expired(s, 200, 0, exp, 4) == 1 && exp[0]->client == &b);
	CHECK(pn_sessions_expired(s, 204, 5, exp, 4) == 0);
	CHECK(pn_sessions_expired(s, 1000, 5, exp, 4) == 2);
	CHECK(pn_sessions_expired(s, 1000, 5, exp, 1) == 1);

	/* re-authentication moves a record's expiry (and only a live record's) */
	CHECK(pn_sessions_set_exp(s, &b, 150) == 1);
	CHECK(pn_sessions_expired(s, 150, 0, exp, 4) == 1 && exp[0]->client == &b);
	CHECK(pn_sessions_set_exp(s, &b, 5000) == 1);
	CHECK(pn_sessions_expired(s, 1000, 5, exp, 4) == 1 && exp[0]->client != &b);
	CHECK(pn_sessions_set_exp(s, &b, 200) == 1);
	CHECK(pn_sessions_set_exp(s, &gone, 200) == 0);

	/* services: tracked for rights, never announced, remembered as service users */
	CHECK(pn_sessions_add(s, fc(&svc, "worker-1"), "worker", 5000, 1) == 0);
	CHECK(pn_sessions_is_service_user(s, "worker") == 1);
	CHECK(pn_sessions_is_service_user(s, "u1") == 0);
	CHECK(flush_all(s, &seq, 1004, &e) == 1); /* u1; u3 and u1-a came and went unannounced; not worker */
	for(i = 0; i < e.n && i < 8; i++) CHECK(strcmp(e.user[i], "worker") != 0 && strcmp(e.user[i], "u3") != 0);
	CHECK(pn_sessions_remove(s, &svc) == 1);
	CHECK(pn_sessions_is_service_user(s, "worker") == 1);

	/* the same pointer re-authenticating replaces its record */
	CHECK(pn_sessions_add(s, &b, "u2", 10, 0) == 0);
	CHECK(pn_sessions_count_other(s, "u1", NULL) == 1);
	CHECK(pn_sessions_count_other(s, "u2", NULL) == 1);

	/* last connection gone: the offline snapshot, once */
	CHECK(pn_sessions_depart(s, &d) == 1);
	CHECK(pn_sessions_remove(s, &b) == 1);
	CHECK(flush_all(s, &seq, 1005, &e) == 1); /* u1 offline; u2 came and went unannounced */
	CHECK(e.n == 1 && !strcmp(e.user[0], "u1"));
	CHECK(strstr(e.json[0], "\"connections\":0,\"clientIds\":[]") != NULL);
	CHECK(pn_sessions_size(s) == 0);
	pn_sessions_reap(s);
	/* the user records went with their last connection; the service user is remembered */
	CHECK(pn_sessions_users(s) == 1 && pn_sessions_is_service_user(s, "worker"));

	/* a user who was announced and then left: offline, once */
	CHECK(pn_sessions_add(s, fc(&gone, "g1"), "g1", 500, 0) == 0);
	CHECK(flush_all(s, &seq, 1006, &e) == 1);
	CHECK(pn_sessions_depart(s, &gone) == 1);
	CHECK(pn_sessions_add(s, fc(&a, "g1"), "g1", 500, 0) == 0); /* back before the flush */
	CHECK(flush_all(s, &seq, 1007, &e) == 1 && strstr(e.json[0], "\"connections\":1"));
	pn_sessions_reap(s);
	CHECK(pn_sessions_remove(s, &a) == 1);
	CHECK(flush_all(s, &seq, 1008, &e) == 1 && e.n == 1 && strstr(e.json[0], "\"connections\":0"));
	CHECK(flush_all(s, &seq, 1009, &e) == 0);

	test_pictures(s, &seq);

	/* budget: at most that many snapshots per flush, the rest wait their turn in order */
	for(i = 0; i < 10; i++){
		char user[16];
		snprintf(user, sizeof(user), "b%d", i);
		CHECK(pn_sessions_add(s, fc(&many[i], user), user, 900, 0) == 0);
	}
	CHECK(pn_sessions_add(s, fc(&many[10], "b0-x"), "b0", 900, 0) == 0); /* b0 again: still one */
	CHECK(pn_sessions_pending(s) == 10);
	memset(&e, 0, sizeof(e));
	CHECK(pn_sessions_flush(s, "boot1", &seq, 1010, 4, collect, &e) == 4);
	CHECK(!strcmp(e.user[0], "b0") && !strcmp(e.user[3], "b3"));
	CHECK(strstr(e.json[0], "\"clientIds\":[\"b0\",\"b0-x\"]") != NULL);
	CHECK(pn_sessions_pending(s) == 6);
	memset(&e, 0, sizeof(e));
	CHECK(pn_sessions_flush(s, "boot1", &seq, 1011, 0, collect, &e) == 0);
	CHECK(flush_all(s, &seq, 1012, &e) == 6 && !strcmp(e.user[0], "b4"));
	for(i = 0; i <= 10; i++) CHECK(pn_sessions_remove(s, &many[i]) == 1);
	CHECK(flush_all(s, &seq, 1013, &e) == 10);
	CHECK(pn_sessions_users(s) == 1);

	/* many connections: resizing keeps every record findable, expiry in exp order */
	for(i = 0; i < 20000; i++){
		char user[16], cid[48];
		snprintf(user, sizeof(user), "u%d", i % 3000);
		snprintf(cid, sizeof(cid), "%s-%d", user, i);
		CHECK(pn_sessions_add(s, fc(&many[i], cid), user, 100000 - i, 0) == 0);
	}
	CHECK(pn_sessions_size(s) == 20000);
	CHECK(pn_sessions_count_other(s, "u7", NULL) == 7);
	CHECK(pn_sessions_expired(s, 100000 - 19997, 0, exp, 4) == 3);
	for(i = 0; i < 20000; i += 2) CHECK(pn_sessions_depart(s, &many[i]) == 1);
	CHECK(pn_sessions_size(s) == 10000);
	pn_sessions_reap(s);
	for(i = 1; i < 20000; i += 2) CHECK(pn_sessions_find(s, &many[i]) != NULL);
	for(i = 0; i < 20000; i += 2) CHECK(pn_sessions_find(s, &many[i]) == NULL);
	CHECK(pn_sessions_expired(s, 100000 - 19999, 0, exp, 4) == 1 && exp[0]->client == &many[19999]);
	CHECK(pn_sessions_expired(s, 100000 - 19995, 0, exp, 4) == 3);
	for(i = 1; i < 20000; i += 2) CHECK(pn_sessions_remove(s, &many[i]) == 1);
	CHECK(pn_sessions_size(s) == 0);
	CHECK(pn_sessions_expired(s, 1LL << 40, 0, exp, 4) == 0);
	flush_all(s, &seq, 1014, &e);
	CHECK(pn_sessions_users(s) == 1);
	pn_sessions_free(s);
}

int main(void)
{
	EVP_PKEY *rsa = EVP_RSA_gen(2048), *rsa2 = EVP_RSA_gen(2048), *rsa_small = EVP_RSA_gen(1024);
	EVP_PKEY *ec = EVP_EC_gen("P-256"), *ec2 = EVP_EC_gen("P-256");

	NOW = time(NULL);
	if(!rsa || !rsa2 || !rsa_small || !ec || !ec2){
		fprintf(stderr, "key generation failed\n");
		return 2;
	}
	test_config(rsa, ec, rsa_small);
	test_hs256();
	test_sid_and_iat();
	test_asymmetric(rsa, rsa2, ec, ec2);
	test_identity();
	test_acl();
	test_sessions();

	EVP_PKEY_free(rsa); EVP_PKEY_free(rsa2); EVP_PKEY_free(rsa_small);
	EVP_PKEY_free(ec); EVP_PKEY_free(ec2);
	printf("test_token: %d checks, %d failures\n", g_checks, g_failures);
	return g_failures ? 1 : 0;
}
