"""Build an order the way the commerce system's order orchestration does.

One request becomes one order made of three components (named as in Sitecore Commerce):
  CartLineComponent             sku, quantity, unit price from the catalogue, line total
  PhysicalFulfillmentComponent  shipping party (name, address) and method from the device's
                                customer profile, shipping price from the catalogue
  FederatedPaymentComponent     the profile's payment token, amount = price x quantity + shipping
Pure: no clock, no storage; `Rejected` carries the reason sent to the device as `failed`.
"""
from host_tools.cloud.orders.catalogue import format_cents

# A payment token starting with this is declined at payment authorisation (demo and tests).
DECLINED_TOKEN_PREFIX = "tok_declined"


class Rejected(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Profile:
    """The customer bound to a device."""
    __slots__ = ("device_id", "name", "address", "shipping_method", "payment_token")

    def __init__(self, device_id, name, address, shipping_method, payment_token):
        self.device_id, self.name, self.address = device_id, name, address
        self.shipping_method, self.payment_token = shipping_method, payment_token

    def as_dict(self, reveal_token=False):
        return {"deviceId": self.device_id, "name": self.name, "address": self.address,
                "shippingMethod": self.shipping_method,
                "paymentToken": self.payment_token if reveal_token else mask(self.payment_token)}


def mask(token):
    """Enough of a payment token to recognise it, never all of it."""
    if not token:
        return ""
    return "****" + token[-4:] if len(token) > 8 else "****"


def check_profile(catalogue, name, address, shipping_method, payment_token):
    """Raise ValueError with what to fix when a profile could never place an order."""
    for field, value in (("name", name), ("address", address), ("payment token", payment_token)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{field} must not be empty")
    if catalogue.shipping_method(shipping_method) is None:
        raise ValueError(f"unknown shipping method {shipping_method!r}; choose one of "
                         + ", ".join(sorted(catalogue.shipping_methods)))


def build_order(device_id, request, profile, catalogue):
    """(order document, amount in cents) for `request` (an OrderRequest), or raise
    Rejected(reason). The caller adds "orderId" once it has allocated one."""
    product = catalogue.product(request.sku)
    if product is None:
        raise Rejected(f"unknown sku {request.sku}")
    if request.quantity > product.max_quantity:
        raise Rejected(f"quantity {request.quantity} exceeds the maximum of "
                       f"{product.max_quantity} for {request.sku}")
    if profile is None:
        raise Rejected("no customer profile for this device")
    method = catalogue.shipping_method(profile.shipping_method)
    if method is None:
        raise Rejected(f"shipping method {profile.shipping_method} is not offered")
    line_total = product.unit_price * request.quantity
    amount = line_total + method.price
    return {
        "orderRequestId": request.request_id,
        "deviceId": device_id,
        "currency": catalogue.currency,
        "components": [
            {"type": "CartLineComponent", "sku": product.sku, "name": product.name,
             "quantity": request.quantity, "unitPrice": format_cents(product.unit_price),
             "lineTotal": format_cents(line_total)},
            {"type": "PhysicalFulfillmentComponent",
             "shippingParty": {"name": profile.name, "address": profile.address},
             "fulfillmentMethod": {"code": method.code, "name": method.name,
                                   "price": format_cents(method.price)}},
            {"type": "FederatedPaymentComponent", "paymentToken": profile.payment_token,
             "amount": format_cents(amount)},
        ],
        "totals": {"subTotal": format_cents(line_total), "shipping": format_cents(method.price),
                   "grandTotal": format_cents(amount)},
    }, amount


def component(document, kind):
    for item in document.get("components", ()):
        if item.get("type") == kind:
            return item
    return None


def authorize_payment(document):
    """None when the federated payment is authorised, else the reason it was declined."""
    payment = component(document, "FederatedPaymentComponent")
    if payment is None:
        return "no payment on the order"
    if payment.get("paymentToken", "").startswith(DECLINED_TOKEN_PREFIX):
        return "payment declined"
    return None


def redacted(document):
    """A copy of the order document safe to print: the payment token masked."""
    copy = dict(document)
    copy["components"] = [dict(c) for c in document.get("components", ())]
    for item in copy["components"]:
        if "paymentToken" in item:
            item["paymentToken"] = mask(item["paymentToken"])
    return copy
