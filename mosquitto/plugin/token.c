/*
 * MQTT token verification (see token.h). No Mosquitto includes: unit-tested and fuzzed alone.
 */
#include "token.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#define PN_MAX_KEY_FILE_BYTES 65536
#define PN_MAX_SECRET_FILE_BYTES 4096
#define PN_MAX_CLAIM_STRING 256

static const char *const RESULT_STR[PN_RESULT_COUNT] = {
	[PN_OK] = "ok",
	[PN_ERR_EMPTY] = "empty token",
	[PN_ERR_TOO_LARGE] = "token larger than max_token_bytes",
	[PN_ERR_MALFORMED] = "malformed token",
	[PN_ERR_HEADER] = "refused header (typ/crit/jku/jwk/x5u/x5c)",
	[PN_ERR_ALG] = "algorithm is not the configured one",
	[PN_ERR_SIGNATURE] = "bad signature",
	[PN_ERR_DUPLICATE] = "duplicate JSON key",
	[PN_ERR_EXP_MISSING] = "exp missing or not an integer",
	[PN_ERR_EXPIRED] = "token expired",
	[PN_ERR_NBF] = "nbf in the future or invalid",
	[PN_ERR_IAT] = "iat in the future or invalid",
	[PN_ERR_AUD] = "wrong audience",
	[PN_ERR_ISS] = "wrong issuer",
	[PN_ERR_SUB] = "sub missing or not a valid user id",
	[PN_ERR_ROLE] = "unknown role or invalid sid",
	[PN_ERR_USERNAME] = "username is not a valid user id or differs from sub",
	[PN_ERR_CLIENT_ID] = "client id does not belong to the user",
	[PN_ERR_NOMEM] = "out of memory",
};

const char *pn_result_str(pn_result r)
{
	if((int)r < 0 || r >= PN_RESULT_COUNT || !RESULT_STR[r]) return "unknown";
	return RESULT_STR[r];
}

const char *pn_alg_name(pn_alg alg)
{
	switch(alg){
		case PN_ALG_HS256: return "HS256";
		case PN_ALG_RS256: return "RS256";
		case PN_ALG_ES256: return "ES256";
	}
	return "?";
}

/* ------------------------------------------------------------------ identifiers */

static int user_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		|| c == '_' || c == '-';
}

static int suffix_char(unsigned char c)
{
	return user_char(c) || c == '.' || c == ':';
}

int pn_valid_user_id(const char *s)
{
	size_t i;
	if(!s) return 0;
	for(i = 0; s[i]; i++){
		if(i >= PN_USER_ID_MAX || !user_char((unsigned char)s[i])) return 0;
	}
	return i > 0;
}

int pn_valid_client_id(const char *user, const char *client_id)
{
	size_t ulen, i;
	if(!pn_valid_user_id(user) || !client_id) return 0;
	ulen = strlen(user);
	if(strncmp(client_id, user, ulen) != 0) return 0;
	if(client_id[ulen] == '\0') return 1;
	if(client_id[ulen] != '-') return 0;
	client_id += ulen + 1;
	for(i = 0; client_id[i]; i++){
		if(i >= PN_CLIENT_SUFFIX_MAX || !suffix_char((unsigned char)client_id[i])) return 0;
	}
	return i > 0;
}

/* ------------------------------------------------------------------ base64url */

static int b64url_value(unsigned char c)
{
	if(c >= 'A' && c <= 'Z') return c - 'A';
	if(c >= 'a' && c <= 'z') return c - 'a' + 26;
	if(c >= '0' && c <= '9') return c - '0' + 52;
	if(c == '-') return 62;
	if(c == '_') return 63;
	return -1;
}

long pn_b64url_decode(const char *in, size_t len, unsigned char *out)
{
	size_t i, o = 0;
	unsigned long acc = 0;
	int bits = 0;

	if(len % 4 == 1) return -1;
	for(i = 0; i < len; i++){
		int v = b64url_value((unsigned char)in[i]);
		if(v < 0) return -1;
		acc = (acc << 6) | (unsigned long)v;
		bits += 6;
		if(bits >= 8){
			bits -= 8;
			out[o++] = (unsigned char)((acc >> bits) & 0xFF);
		}
	}
	/* Canonical encoding only: the unused low bits of the last character must be zero. */
	if(bits > 0 && (acc & ((1UL << bits) - 1)) != 0) return -1;
	out[o] = '\0';
	return (long)o;
}

/* ------------------------------------------------------------------ configuration */

__attribute__((format(printf, 3, 4)))
static int cfg_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if(err && errlen){
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;
	if(!s || !*s) return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if(errno || *end != '\0' || v < min || v > max) return -1;
	*out = v;
	return 0;
}

/* Reads a whole small file; returns malloc'd bytes (NUL-terminated) or NULL. */
static unsigned char *read_file(const char *path, size_t limit, size_t *len_out, const char **why)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	size_t n;

	if(!f){
		*why = strerror(errno);
		return NULL;
	}
	buf = malloc(limit + 2);
	if(!buf){
		fclose(f);
		*why = "out of memory";
		return NULL;
	}
	n = fread(buf, 1, limit + 1, f);
	if(ferror(f)){
		*why = "read error";
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	if(n > limit){
		*why = "file too large";
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len_out = n;
	return buf;
}

/* Parses and checks the public key; on success *out holds it (decoded once, used for every CONNECT). */
static int load_public_key(pn_alg alg, const unsigned char *pem, size_t len, EVP_PKEY **out,
		char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pkey = NULL;
	int rc = -1;
	char group[64];
	size_t glen = 0;

	if(!bio) return cfg_error(err, errlen, "out of memory");
	pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if(!pkey){
		return cfg_error(err, errlen,
				"jwt_public_key_file is not a PEM public key (\"-----BEGIN PUBLIC KEY-----\"); "
				"for %s export it with `openssl pkey -pubout`", pn_alg_name(alg));
	}
	if(alg == PN_ALG_RS256){
		if(EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA){
			cfg_error(err, errlen, "jwt_alg RS256 needs an RSA public key");
		}else if(EVP_PKEY_get_bits(pkey) < 2048){
			cfg_error(err, errlen, "RSA public key too small (%d bits; need >= 2048)",
					EVP_PKEY_get_bits(pkey));
		}else{
			rc = 0;
		}
	}else if(alg == PN_ALG_ES256){
		if(EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC
				|| !EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen)
				|| strcmp(group, "prime256v1") != 0){
			cfg_error(err, errlen, "jwt_alg ES256 needs an EC P-256 (prime256v1) public key");
		}else{
			rc = 0;
		}
	}
	if(rc == 0) *out = pkey;
	else EVP_PKEY_free(pkey);
	return rc;
}

/* HS256: an HMAC-SHA256 context keyed once; each verification re-initialises it in place. */
static EVP_MAC_CTX *new_hmac(const unsigned char *key, size_t key_len)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[2];

	EVP_MAC_free(mac); /* the context keeps its own reference */
	if(!ctx) return NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if(!EVP_MAC_init(ctx, key, key_len, params)){
		EVP_MAC_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

void pn_config_free(pn_token_config *cfg)
{
	if(!cfg) return;
	if(cfg->key){
		memset(cfg->key, 0, cfg->key_len);
		free(cfg->key);
	}
	EVP_MAC_CTX_free(cfg->mac);
	EVP_PKEY_free(cfg->pkey);
	EVP_MD_CTX_free(cfg->md);
	free(cfg->scratch);
	free(cfg->audience);
	free(cfg->issuer);
	memset(cfg, 0, sizeof(*cfg));
}

int pn_config_load(pn_token_config *cfg, const pn_config_input *in, char *err, size_t errlen)
{
	const char *why = NULL;
	long v;

	memset(cfg, 0, sizeof(*cfg));
	cfg->leeway = 5;
	cfg->max_token_bytes = PN_DEFAULT_MAX_TOKEN_BYTES;

	if(!in->alg || !strcmp(in->alg, "HS256")){
		cfg->alg = PN_ALG_HS256;
	}else if(!strcmp(in->alg, "RS256")){
		cfg->alg = PN_ALG_RS256;
	}else if(!strcmp(in->alg, "ES256")){
		cfg->alg = PN_ALG_ES256;
	}else{
		return cfg_error(err, errlen, "jwt_alg \"%s\" is not supported; use HS256, RS256 or ES256",
				in->alg);
	}

	if(cfg->alg == PN_ALG_HS256){
		if(in->public_key_file){
			return cfg_error(err, errlen, "jwt_public_key_file is set but jwt_alg is HS256; set jwt_alg "
					"RS256 or ES256, or drop the key file");
		}
		if(in->secret && in->secret_file){
			return cfg_error(err, errlen, "set jwt_secret or jwt_secret_file, not both");
		}
		if(in->secret){
			cfg->key_len = strlen(in->secret);
			cfg->key = (unsigned char *)strdup(in->secret);
			if(!cfg->key) goto nomem;
		}else if(in->secret_file){
			cfg->key = read_file(in->secret_file, PN_MAX_SECRET_FILE_BYTES, &cfg->key_len, &why);
			if(!cfg->key){
				cfg_error(err, errlen, "cannot read jwt_secret_file %s: %s", in->secret_file, why);
				pn_config_free(cfg);
				return -1;
			}
			if(cfg->key_len && cfg->key[cfg->key_len - 1] == '\n') cfg->key[--cfg->key_len] = '\0';
			if(cfg->key_len && cfg->key[cfg->key_len - 1] == '\r') cfg->key[--cfg->key_len] = '\0';
		}else{
			return cfg_error(err, errlen, "jwt_alg HS256 needs plugin_opt_jwt_secret or "
					"plugin_opt_jwt_secret_file");
		}
		if(cfg->key_len < PN_MIN_HS256_SECRET){
			cfg_error(err, errlen, "the HS256 secret is %zu bytes; it must be at least %d bytes "
					"(generate one with `openssl rand -hex 32`)", cfg->key_len, PN_MIN_HS256_SECRET);
			pn_config_free(cfg);
			return -1;
		}
	}else{
		if(in->secret || in->secret_file){
			return cfg_error(err, errlen, "jwt_secret/jwt_secret_file is set but jwt_alg is %s; "
					"asymmetric tokens are verified with jwt_public_key_file only",
					pn_alg_name(cfg->alg));
		}
		if(!in->public_key_file){
			return cfg_error(err, errlen, "jwt_alg %s needs plugin_opt_jwt_public_key_file",
					pn_alg_name(cfg->alg));
		}
		cfg->key = read_file(in->public_key_file, PN_MAX_KEY_FILE_BYTES, &cfg->key_len, &why);
		if(!cfg->key){
			cfg_error(err, errlen, "cannot read jwt_public_key_file %s: %s", in->public_key_file, why);
			pn_config_free(cfg);
			return -1;
		}
		if(cfg->key_len == 0
				|| load_public_key(cfg->alg, cfg->key, cfg->key_len, (EVP_PKEY **)&cfg->pkey, err, errlen)){
			if(cfg->key_len == 0) cfg_error(err, errlen, "jwt_public_key_file %s is empty", in->public_key_file);
			pn_config_free(cfg);
			return -1;
		}
	}

	cfg->audience = strdup(in->audience ? in->audience : PN_DEFAULT_AUDIENCE);
	if(!cfg->audience) goto nomem;
	if(!cfg->audience[0] || strlen(cfg->audience) > PN_MAX_CLAIM_STRING){
		cfg_error(err, errlen, "audience must be 1..%d characters", PN_MAX_CLAIM_STRING);
		pn_config_free(cfg);
		return -1;
	}
	if(in->issuer){
		if(!in->issuer[0] || strlen(in->issuer) > PN_MAX_CLAIM_STRING){
			cfg_error(err, errlen, "issuer must be 1..%d characters (or unset)", PN_MAX_CLAIM_STRING);
			pn_config_free(cfg);
			return -1;
		}
		cfg->issuer = strdup(in->issuer);
		if(!cfg->issuer) goto nomem;
	}
	if(in->leeway){
		if(parse_long(in->leeway, 0, PN_MAX_LEEWAY, &v)){
			cfg_error(err, errlen, "leeway \"%s\" must be an integer 0..%d (seconds)", in->leeway, PN_MAX_LEEWAY);
			pn_config_free(cfg);
			return -1;
		}
		cfg->leeway = v;
	}
	if(in->max_token_bytes){
		if(parse_long(in->max_token_bytes, PN_MIN_MAX_TOKEN_BYTES, PN_MAX_MAX_TOKEN_BYTES, &v)){
			cfg_error(err, errlen, "max_token_bytes \"%s\" must be an integer %d..%d",
					in->max_token_bytes, PN_MIN_MAX_TOKEN_BYTES, PN_MAX_MAX_TOKEN_BYTES);
			pn_config_free(cfg);
			return -1;
		}
		cfg->max_token_bytes = (size_t)v;
	}
	cfg->scratch = malloc(cfg->max_token_bytes + 1);
	if(!cfg->scratch) goto nomem;
	if(cfg->alg == PN_ALG_HS256){
		cfg->mac = new_hmac(cfg->key, cfg->key_len);
		if(!cfg->mac) goto nomem;
	}else{
		cfg->md = EVP_MD_CTX_new();
		if(!cfg->md) goto nomem;
	}
	return 0;

nomem:
	pn_config_free(cfg);
	return cfg_error(err, errlen, "out of memory");
}

/* ------------------------------------------------------------------ verification */

/* Parse one decoded segment as a JSON object; duplicate keys are refused. */
static pn_result load_object(const unsigned char *buf, size_t len, json_t **out)
{
	json_error_t jerr;
	json_t *obj = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if(!obj){
		return json_error_code(&jerr) == json_error_duplicate_key ? PN_ERR_DUPLICATE : PN_ERR_MALFORMED;
	}
	if(!json_is_object(obj)){
		json_decref(obj);
		return PN_ERR_MALFORMED;
	}
	*out = obj;
	return PN_OK;
}

static pn_result check_header(const pn_token_config *cfg, json_t *hdr)
{
	static const char *const refused[] = {"crit", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", NULL};
	json_t *alg = json_object_get(hdr, "alg");
	json_t *typ = json_object_get(hdr, "typ");
	json_t *kid = json_object_get(hdr, "kid");
	int i;

	/* The algorithm is pinned by configuration: exact, case-sensitive match (RFC 8725 §3.1). */
	if(!json_is_string(alg) || strcmp(json_string_value(alg), pn_alg_name(cfg->alg)) != 0){
		return PN_ERR_ALG;
	}
	if(typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)){
		return PN_ERR_HEADER;
	}
	/* We never fetch keys or understand extensions: tokens asking for either are refused. */
	for(i = 0; refused[i]; i++){
		if(json_object_get(hdr, refused[i])) return PN_ERR_HEADER;
	}
	/* kid is not used to pick a key (one key per configuration); only bounded. */
	if(kid && (!json_is_string(kid) || json_string_length(kid) > PN_MAX_CLAIM_STRING)){
		return PN_ERR_HEADER;
	}
	return PN_OK;
}

static int aud_matches(json_t *aud, const char *want)
{
	size_t i;
	json_t *v;

	if(json_is_string(aud)) return strcmp(json_string_value(aud), want) == 0;
	if(!json_is_array(aud) || json_array_size(aud) == 0 || json_array_size(aud) > 16) return 0;
	json_array_foreach(aud, i, v){
		if(!json_is_string(v)) return 0;
	}
	json_array_foreach(aud, i, v){
		if(!strcmp(json_string_value(v), want)) return 1;
	}
	return 0;
}

static pn_result check_claims(const pn_token_config *cfg, json_t *claims, time_t now, pn_claims *out)
{
	json_t *exp = json_object_get(claims, "exp");
	json_t *nbf = json_object_get(claims, "nbf");
	json_t *iat = json_object_get(claims, "iat");
	json_t *aud = json_object_get(claims, "aud");
	json_t *iss = json_object_get(claims, "iss");
	json_t *sub = json_object_get(claims, "sub");
	json_t *role = json_object_get(claims, "role");
	json_t *sid = json_object_get(claims, "sid");
	long long t = (long long)now;

	if(!json_is_integer(exp)) return PN_ERR_EXP_MISSING;
	if(t - cfg->leeway >= (long long)json_integer_value(exp)) return PN_ERR_EXPIRED;
	if(nbf && (!json_is_integer(nbf) || (long long)json_integer_value(nbf) > t + cfg->leeway)){
		return PN_ERR_NBF;
	}
	if(iat && (!json_is_integer(iat) || (long long)json_integer_value(iat) > t + cfg->leeway)){
		return PN_ERR_IAT;
	}
	if(!aud || !aud_matches(aud, cfg->audience)) return PN_ERR_AUD;
	if(cfg->issuer && (!json_is_string(iss) || strcmp(json_string_value(iss), cfg->issuer) != 0)){
		return PN_ERR_ISS;
	}
	if(!json_is_string(sub) || json_string_length(sub) > PN_USER_ID_MAX
			|| strlen(json_string_value(sub)) != json_string_length(sub)
			|| !pn_valid_user_id(json_string_value(sub))){
		return PN_ERR_SUB;
	}
	out->is_service = 0;
	if(role){
		if(!json_is_string(role)) return PN_ERR_ROLE;
		if(!strcmp(json_string_value(role), "service")){
			out->is_service = 1;
		}else if(strcmp(json_string_value(role), "user") != 0){
			return PN_ERR_ROLE;
		}
	}
	if(sid){
		size_t i, n;
		const char *v;
		if(!json_is_string(sid)) return PN_ERR_ROLE;
		v = json_string_value(sid);
		n = json_string_length(sid);
		if(n == 0 || n > PN_SID_MAX || strlen(v) != n) return PN_ERR_ROLE;
		for(i = 0; i < n; i++){
			if(!user_char((unsigned char)v[i])) return PN_ERR_ROLE;
		}
		memcpy(out->sid, v, n + 1);
	}
	memcpy(out->sub, json_string_value(sub), json_string_length(sub) + 1);
	out->exp = (long long)json_integer_value(exp);
	out->iat = iat ? (long long)json_integer_value(iat) : -1;
	return PN_OK;
}

/* DER for an ECDSA signature from JWS's raw r||s (32 bytes each); returns its length. */
static size_t ecdsa_der(const unsigned char rs[64], unsigned char der[72])
{
	size_t o = 2, k;
	int part;
	for(part = 0; part < 2; part++){
		const unsigned char *v = rs + 32 * part;
		size_t skip = 0;
		while(skip < 31 && v[skip] == 0) skip++;
		der[o++] = 0x02;
		k = 32 - skip;
		if(v[skip] & 0x80){
			der[o++] = (unsigned char)(k + 1);
			der[o++] = 0x00;
		}else{
			der[o++] = (unsigned char)k;
		}
		memcpy(der + o, v + skip, k);
		o += k;
	}
	der[0] = 0x30;
	der[1] = (unsigned char)(o - 2);
	return o;
}

/* The signature over header.payload with the configured key only. */
static pn_result check_signature(const pn_token_config *cfg, const char *signing_input, size_t silen,
		const unsigned char *sig, size_t siglen)
{
	unsigned char mac[EVP_MAX_MD_SIZE], der[72];
	size_t maclen = 0;
	EVP_MD_CTX *md = cfg->md;

	if(cfg->alg == PN_ALG_HS256){
		EVP_MAC_CTX *ctx = cfg->mac;
		if(siglen != 32) return PN_ERR_SIGNATURE;
		/* NULL key: re-initialise with the key set at load (no allocation, no key schedule). */
		if(!ctx || !EVP_MAC_init(ctx, NULL, 0, NULL) || !EVP_MAC_update(ctx, (const unsigned char *)signing_input, silen)
				|| !EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)) || maclen != 32){
			return PN_ERR_SIGNATURE;
		}
		return CRYPTO_memcmp(mac, sig, 32) == 0 ? PN_OK : PN_ERR_SIGNATURE;
	}
	if(!md || !cfg->pkey) return PN_ERR_SIGNATURE;
	if(cfg->alg == PN_ALG_ES256){
		if(siglen != 64) return PN_ERR_SIGNATURE;
		siglen = ecdsa_der(sig, der);
		sig = der;
	}else if(siglen != (size_t)EVP_PKEY_get_size(cfg->pkey)){
		return PN_ERR_SIGNATURE;
	}
	EVP_MD_CTX_reset(md);
	if(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, cfg->pkey) != 1
			|| EVP_DigestVerify(md, sig, siglen, (const unsigned char *)signing_input, silen) != 1){
		EVP_MD_CTX_reset(md);
		return PN_ERR_SIGNATURE;
	}
	EVP_MD_CTX_reset(md);
	return PN_OK;
}

pn_result pn_token_verify(const pn_token_config *cfg, const char *token, time_t now, pn_claims *out)
{
	if(!cfg) return PN_ERR_SIGNATURE;
	if(!token || !token[0]) return PN_ERR_EMPTY;
	/* Size first: nothing below runs on an oversized token. */
	return pn_token_verify_len(cfg, token, strnlen(token, cfg->max_token_bytes + 1), now, out);
}

pn_result pn_token_verify_len(const pn_token_config *cfg, const char *token, size_t len, time_t now,
		pn_claims *out)
{
	size_t hlen, plen, slen, i;
	const char *dot1, *dot2;
	unsigned char *buf;
	long n, siglen;
	json_t *hdr = NULL, *claims = NULL;
	pn_result r;
	pn_claims tmp;

	if(!cfg || !cfg->key || !cfg->key_len || !cfg->scratch) return PN_ERR_SIGNATURE; /* never "no check" */
	if(!token || len == 0) return PN_ERR_EMPTY;
	if(len > cfg->max_token_bytes) return PN_ERR_TOO_LARGE;

	/* Exactly three non-empty base64url segments (which also rules out NUL bytes). */
	dot1 = memchr(token, '.', len);
	if(!dot1) return PN_ERR_MALFORMED;
	dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
	if(!dot2) return PN_ERR_MALFORMED;
	hlen = (size_t)(dot1 - token);
	plen = (size_t)(dot2 - dot1 - 1);
	slen = len - (size_t)(dot2 + 1 - token);
	if(!hlen || !plen || !slen) return PN_ERR_MALFORMED;
	for(i = 0; i < len; i++){
		if(token[i] != '.' && b64url_value((unsigned char)token[i]) < 0) return PN_ERR_MALFORMED;
	}
	if(memchr(dot2 + 1, '.', slen)) return PN_ERR_MALFORMED;

	/*
	 * One buffer of max_token_bytes + 1, allocated at load: the signature is decoded at its
	 * end, each JSON segment at its start (decoded sizes are 3/4 of the encoded ones, and the
	 * three segments together are shorter than the token).
	 */
	buf = cfg->scratch;
	siglen = pn_b64url_decode(dot2 + 1, slen, buf + len - slen);
	if(siglen <= 0) return PN_ERR_MALFORMED;
	n = pn_b64url_decode(token, hlen, buf);
	if(n <= 0) return PN_ERR_MALFORMED;
	if((r = load_object(buf, (size_t)n, &hdr)) != PN_OK) goto done;
	if((r = check_header(cfg, hdr)) != PN_OK) goto done;

	n = pn_b64url_decode(dot1 + 1, plen, buf);
	if(n <= 0){
		r = PN_ERR_MALFORMED;
		goto done;
	}
	if((r = load_object(buf, (size_t)n, &claims)) != PN_OK) goto done;

	/* Signature: the configured algorithm and key, whatever the header claims (checked above). */
	if((r = check_signature(cfg, token, (size_t)(dot2 - token), buf + len - slen, (size_t)siglen)) != PN_OK){
		goto done;
	}

	memset(&tmp, 0, sizeof(tmp));
	r = check_claims(cfg, claims, now, &tmp);
	if(r == PN_OK && out) *out = tmp;

done:
	if(hdr) json_decref(hdr);
	if(claims) json_decref(claims);
	return r;
}

pn_result pn_check_connect(const pn_token_config *cfg, const char *username, const char *client_id,
		const char *token, time_t now, pn_claims *out)
{
	if(!cfg) return PN_ERR_SIGNATURE;
	return pn_check_connect_len(cfg, username, client_id, token,
			token ? strnlen(token, cfg->max_token_bytes + 1) : 0, now, out);
}

pn_result pn_check_connect_len(const pn_token_config *cfg, const char *username, const char *client_id,
		const char *token, size_t token_len, time_t now, pn_claims *out)
{
	pn_claims claims;
	pn_result r;

	/* Cheap identity checks first: no crypto for a username that can never be valid. */
	if(!pn_valid_user_id(username)) return PN_ERR_USERNAME;
	if(!pn_valid_client_id(username, client_id)) return PN_ERR_CLIENT_ID;
	memset(&claims, 0, sizeof(claims));
	r = pn_token_verify_len(cfg, token, token_len, now, &claims);
	if(r != PN_OK) return r;
	if(strcmp(claims.sub, username) != 0) return PN_ERR_USERNAME;
	if(out) *out = claims;
	return PN_OK;
}
