"""Names shared by the proxies that emit spans and the stages that read them back."""

# service.name of the gateway's spans: detectors read client features from it and the dashboards
# filter on it, so one default lives here.
GATEWAY_SERVICE = "gateway"
