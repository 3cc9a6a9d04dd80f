/* Persistent-session notices (persistent.h). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>

#include "persistent.h"

int pn_persistent_notice(char *buf, unsigned long size, const char *user, const char *client_id,
		long long at_ms)
{
	int n = snprintf(buf, size, "{\"userId\":\"%s\",\"clientId\":\"%s\",\"at\":%lld}", user, client_id,
			at_ms);
	return (n < 0 || (unsigned long)n >= size) ? -1 : n;
}

void pn_persistent_opened(const char *user, const char *client_id)
{
	char json[384];
	struct timespec ts;
	int n, rc;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = pn_persistent_notice(json, sizeof(json), user, client_id,
			(long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	if(n < 0) return;
	rc = mosquitto_broker_publish_copy(NULL, PN_PERSISTENT_TOPIC, n, json, 1, false, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, "plantnotify: could not publish %s (error %d)",
				PN_PERSISTENT_TOPIC, rc);
	}
}
