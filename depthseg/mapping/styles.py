"""What GIS tools show for each layer: class names, colours, units, ranges and QGIS styles.

- Land cover: category names and a thematic raster attribute table (value, class, colour)
  in the VRT, which GDAL reports (``GetCategoryNames``, ``GetDefaultRAT``) and QGIS shows;
  a colour table in the VRT and in every COG.
- Confidence: uint8 ``round(255 x p)``; the VRT carries ``Scale`` 1/255 and unit ``1`` so
  GDAL-aware readers see a probability, 0 is no data.
- Depth: relative depth in [0, 1] (each training image's heights were stretched to [0, 1]
  by their 2nd/98th percentiles, so values compare within a scene, not across in metres);
  unit ``1``, valid range [0, 1].
- A QGIS style file (``<layer>.qml``) beside each layer's VRT, which QGIS applies when it
  opens the VRT: the classes with their names and colours, a grey ramp for confidence and a
  terrain-like ramp for depth.

Category names are not written into the COG tiles themselves: GeoTIFF keeps them only in a
``.aux.xml`` sidecar, which ``/vsis3/`` readers do not look for (``EMPTY_DIR``) and which
would double a province's object count. The tiles carry the class names as tags
(``class_names``, ``CLASS_<i>``) and the colour table.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from depthseg.io.bundle import Contract

#: Per layer: (description, unit, valid range, scale) as the VRT states them.
LAYER_INFO: dict[str, tuple[str, str, tuple[float, float], float]] = {
    "landcover": ("land cover class (see the category names); 255 = no data", "",
                  (0, 254), 1.0),
    "confidence": ("confidence: round(255 x the highest class probability); 0 = no data", "1",
                   (1, 255), 1 / 255),
    "depth": ("relative depth in [0, 1], larger = higher (per-scene stretch, not metres); "
              "NaN = no data", "1", (0, 1), 1.0),
}
#: Colour ramps of the continuous layers: (value, colour) stops.
RAMPS: dict[str, list[tuple[float, str]]] = {
    "confidence": [(1, "#440154"), (128, "#21918c"), (255, "#fde725")],
    "depth": [(0.0, "#2c7bb6"), (0.25, "#abd9e9"), (0.5, "#ffffbf"), (0.75, "#fdae61"),
              (1.0, "#d7191c")],
}


DEPTH_SOURCES = {
    "height": "relative height above ground (trained on nDSM heights)",
    "teacher": "relative depth (trained on Depth Anything teacher depth)",
    "none": "no depth (the model was trained without depth targets)",
}


def describe(layer: str, contract: Contract) -> str:
    """What a layer's values mean, for this bundle (depth: what it was trained on)."""
    description = LAYER_INFO[layer][0]
    if layer == "depth" and contract.depth_source in DEPTH_SOURCES:
        description = f"{DEPTH_SOURCES[contract.depth_source]}; {description}"
    return description


def vrt_band_lines(layer: str, contract: Contract) -> list[str]:
    """The ``VRTRasterBand`` elements that name and describe ``layer`` (after NoDataValue)."""
    _, unit, _, scale = LAYER_INFO[layer]
    description = describe(layer, contract)
    lines = [f"    <Description>{escape(description)}</Description>"]
    if unit:
        lines.append(f"    <UnitType>{unit}</UnitType>")
    if scale != 1.0:
        lines += ["    <Offset>0</Offset>", f"    <Scale>{scale!r}</Scale>"]
    if layer != "landcover":
        return lines
    lines.append("    <CategoryNames>")
    lines += [f"      <Category>{escape(name)}</Category>" for name in contract.class_names]
    lines.append("    </CategoryNames>")
    # A thematic RAT. GDAL field usages: 5 MinMax (the pixel value), 2 Name, 6/7/8
    # Red/Green/Blue; field types: 0 integer, 2 string.
    lines += ['    <GDALRasterAttributeTable tableType="thematic">',
              '      <FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage>'
              "</FieldDefn>",
              '      <FieldDefn index="1"><Name>Class</Name><Type>2</Type><Usage>2</Usage>'
              "</FieldDefn>",
              '      <FieldDefn index="2"><Name>Red</Name><Type>0</Type><Usage>6</Usage>'
              "</FieldDefn>",
              '      <FieldDefn index="3"><Name>Green</Name><Type>0</Type><Usage>7</Usage>'
              "</FieldDefn>",
              '      <FieldDefn index="4"><Name>Blue</Name><Type>0</Type><Usage>8</Usage>'
              "</FieldDefn>"]
    for i, (name, (r, g, b)) in enumerate(zip(contract.class_names, contract.palette,
                                              strict=True)):
        lines.append(f'      <Row index="{i}"><F>{i}</F><F>{escape(name)}</F><F>{r}</F>'
                     f"<F>{g}</F><F>{b}</F></Row>")
    lines.append("    </GDALRasterAttributeTable>")
    return lines


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def qml(layer: str, contract: Contract) -> bytes:
    """A QGIS layer style (``.qml``) for ``layer``."""
    if layer == "landcover":
        entries = "\n".join(
            f"        <paletteEntry value=\"{i}\" color=\"{_hex(rgb)}\" alpha=\"255\" "
            f"label={quoteattr(name)}/>"
            for i, (name, rgb) in enumerate(zip(contract.class_names, contract.palette,
                                                strict=True)))
        renderer = (f'    <rasterrenderer type="paletted" band="1" opacity="1" '
                    f'nodataColor="">\n      <colorPalette>\n{entries}\n      </colorPalette>\n'
                    "    </rasterrenderer>")
    else:
        _, unit, (low, high), scale = LAYER_INFO[layer]
        stops = RAMPS[layer]
        items = "\n".join(
            f'          <item value="{value}" color="{color}" alpha="255" '
            f'label="{value * scale:.2f}"/>' for value, color in stops)
        renderer = (
            f'    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" '
            f'classificationMin="{low}" classificationMax="{high}">\n'
            "      <rastershader>\n"
            f'        <colorrampshader colorRampType="INTERPOLATED" minimumValue="{low}" '
            f'maximumValue="{high}" classificationMode="1" clip="0">\n'
            f"{items}\n"
            "        </colorrampshader>\n"
            "      </rastershader>\n"
            "    </rasterrenderer>")
    text = ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.34" styleCategories="Symbology">\n'
            "  <pipe>\n"
            f"{renderer}\n"
            '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
            '    <huesaturation colorizeOn="0" saturation="0" grayscaleMode="0"/>\n'
            '    <rasterresampler maxOversampling="2"/>\n'
            "  </pipe>\n"
            "  <blendMode>0</blendMode>\n"
            "</qgis>\n")
    return text.encode()
