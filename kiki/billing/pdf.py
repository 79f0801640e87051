"""The invoice as a PDF (fpdf2: pure Python, built-in fonts, nothing fetched at run time).

The built-in Helvetica covers Latin-1; any other character prints as '?', so a name in
another script never breaks the document.
"""

from __future__ import annotations

from decimal import Decimal

from fpdf import FPDF

from kiki.billing.models import Customer, Invoice
from kiki.billing.rounding import minor_unit_factor


def format_minor(amount_minor: int, currency: str) -> str:
    """'1,234.50 USD' from 123450 minor units: exact, the currency's own decimals."""
    factor = minor_unit_factor(currency)
    places = len(str(factor)) - 1
    value = Decimal(amount_minor) / factor
    return f"{value:,.{places}f} {currency}"


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def render_invoice(invoice: Invoice, customer: Customer, seller: str) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {invoice.number or 'draft'}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(
        0, 10, _latin1(f"Invoice {invoice.number or '(draft)'}"), new_x="LMARGIN", new_y="NEXT"
    )
    pdf.set_font("Helvetica", size=10)
    period = (
        f"{invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d}"
        if invoice.period_start and invoice.period_end
        else "-"
    )
    issued = invoice.finalized_at or invoice.created_at
    for label, value in (
        ("From", seller),
        ("Bill to", f"{customer.name or customer.customer_id} ({customer.customer_id})"),
        ("Email", customer.email or "-"),
        ("Issued", f"{issued:%Y-%m-%d}"),
        ("Period", period),
        ("Status", invoice.status.value),
    ):
        pdf.cell(30, 6, label)
        pdf.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    currency = invoice.currency
    with pdf.table(col_widths=(120, 50), text_align=("LEFT", "RIGHT")) as table:
        table.row(("Description", "Amount"))
        for line in invoice.lines:
            units = f" x {line.units}" if line.units is not None else ""
            table.row((_latin1(f"{line.description}{units}"),
                       format_minor(line.amount_minor, currency)))  # fmt: skip
    pdf.ln(4)
    totals = [
        ("Subtotal", invoice.subtotal_minor),
        ("Discount", -invoice.discount_minor),
        (f"Tax ({invoice.tax_percent.normalize():f} %)", invoice.tax_minor),
        ("Total", invoice.total_minor),
        ("Credits applied", -invoice.credits_applied_minor),
        ("Amount due", invoice.total_due_minor),
    ]
    if invoice.refunded_minor:
        totals.append(("Refunded", invoice.refunded_minor))
    for label, amount in totals:
        pdf.set_font("Helvetica", "B" if label == "Amount due" else "", 10)
        pdf.cell(120, 6, label, align="R")
        pdf.cell(50, 6, format_minor(amount, currency), align="R", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
