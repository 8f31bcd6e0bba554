/* sd-bus helpers shared by the daemon, quantctl and the service benchmark (header only: util/
 * itself does not link libsystemd). */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

/* A bus-client connection to address (a private bus: tests, $QUANTD_BUS_ADDRESS, --address);
 * *ret is left untouched on failure. */
static inline int bus_open_address(const char *address, sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, true);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                sd_bus_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}
