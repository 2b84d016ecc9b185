"""Coupon codes: a discount code that attributes an order to an agent in a program."""
