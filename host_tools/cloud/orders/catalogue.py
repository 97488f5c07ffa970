"""The product catalogue: SKUs with unit prices, and shipping methods with their prices.

Money is held as integer minor units (cents) so that price x quantity + shipping is exact;
the JSON file writes prices as decimal strings ("18.90").
"""
import os
from decimal import Decimal, InvalidOperation

from firmware.app import schemas
from host_tools.files import load_json

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalogue.json")


class CatalogueError(ValueError):
    """The catalogue file is missing or malformed; the message names the file and the field."""


class Product:
    __slots__ = ("sku", "name", "unit_price", "max_quantity")

    def __init__(self, sku, name, unit_price, max_quantity):
        self.sku, self.name, self.unit_price, self.max_quantity = sku, name, unit_price, max_quantity


class ShippingMethod:
    __slots__ = ("code", "name", "price")

    def __init__(self, code, name, price):
        self.code, self.name, self.price = code, name, price


class Catalogue:
    def __init__(self, currency, products, shipping_methods):
        self.currency = currency
        self.products = products  # sku -> Product
        self.shipping_methods = shipping_methods  # code -> ShippingMethod

    def product(self, sku):
        return self.products.get(sku)

    def shipping_method(self, code):
        return self.shipping_methods.get(code)


def to_cents(text, where):
    """'18.90' -> 1890. Strings only (a JSON float would already have lost exactness)."""
    if not isinstance(text, str):
        raise CatalogueError(f"{where}: price must be a decimal string such as \"4.95\"")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CatalogueError(f"{where}: {text!r} is not a decimal number") from None
    cents = value * 100
    if not value.is_finite() or value < 0 or cents != cents.to_integral_value():
        raise CatalogueError(f"{where}: {text!r} must be >= 0 with at most 2 decimals")
    return int(cents)


def format_cents(cents):
    """1890 -> '18.90'."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def parse(data, source="catalogue"):
    """Validate the decoded JSON of a catalogue file and return a Catalogue."""
    if not isinstance(data, dict):
        raise CatalogueError(f"{source}: expected a JSON object")
    currency = data.get("currency")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise CatalogueError(f"{source}: currency must be a 3-letter code such as \"EUR\"")
    products = {}
    raw_products = data.get("products")
    if not isinstance(raw_products, dict) or not raw_products:
        raise CatalogueError(f"{source}: products must be a non-empty object keyed by SKU")
    for sku, item in raw_products.items():
        where = f"{source}: products.{sku}"
        if not schemas.is_sku(sku):
            raise CatalogueError(f"{where}: a SKU is 1-{schemas.SKU_MAX} characters of "
                                 "A-Z a-z 0-9 - _ . (what a device can order)")
        if not isinstance(item, dict):
            raise CatalogueError(f"{where}: expected an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise CatalogueError(f"{where}.name: expected a non-empty string")
        max_quantity = item.get("maxQuantity", schemas.QUANTITY_MAX)
        if not schemas.is_quantity(max_quantity):
            raise CatalogueError(f"{where}.maxQuantity: expected an integer 1-{schemas.QUANTITY_MAX}")
        products[sku] = Product(sku, name, to_cents(item.get("unitPrice"), where + ".unitPrice"),
                                max_quantity)
    methods = {}
    raw_methods = data.get("shippingMethods")
    if not isinstance(raw_methods, dict) or not raw_methods:
        raise CatalogueError(f"{source}: shippingMethods must be a non-empty object keyed by code")
    for code, item in raw_methods.items():
        where = f"{source}: shippingMethods.{code}"
        if not isinstance(item, dict):
            raise CatalogueError(f"{where}: expected an object")
        name = item.get("name", code)
        if not isinstance(name, str) or not name:
            raise CatalogueError(f"{where}.name: expected a non-empty string")
        methods[code] = ShippingMethod(code, name, to_cents(item.get("price"), where + ".price"))
    return Catalogue(currency.upper(), products, methods)


def load(path=None):
    """Read and validate a catalogue file (the packaged demo catalogue by default)."""
    path = path or DEFAULT_PATH
    data = load_json(path, "catalogue", CatalogueError)
    return parse(data, path)
